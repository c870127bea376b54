#!/usr/bin/env python3
"""Writes the small databases in this directory with the Python `mmdb-writer` package
(PyPI `mmdb-writer` 0.2.7, an implementation independent of the Rust crates the project
uses), so the tests read files from another writer. Its default integer encoding picks the
smallest unsigned type that fits, so AS numbers below 65536 are stored as uint16.

    pip install mmdb-writer==0.2.7 maxminddb
    python3 make_fixtures.py        # run in this directory

The script reads every file back with the Python `maxminddb` reader as a check.
"""

import maxminddb
from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPSet


def names(en):
    return {"de": en, "en": en, "ja": en, "zh-CN": en}


def country(cc, geoname_id, eu=False):
    c = {"geoname_id": geoname_id, "iso_code": cc, "names": names(cc)}
    if eu:
        c["is_in_european_union"] = True
    return c


def plain(v):
    """The value as the reader returns it (typed integers as plain ints)."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, MmdbU32):
        return v.value
    return v


def write(path, database_type, entries):
    w = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description={"en": "ollama-egress test fixture (Python mmdb-writer)"},
    )
    for net, record in entries:
        w.insert_network(IPSet([net]), record)
    w.to_db_file(path)
    with maxminddb.open_database(path) as r:
        for net, record in entries:
            first = net.split("/")[0]
            assert r.get(first) == plain(record), (path, net, r.get(first))


# GeoLite2-ASN layout; "auto" integers: 13335 and 4134 become uint16, 4200000000 uint32.
write(
    "geolite2-asn.mmdb",
    "GeoLite2-ASN",
    [
        ("203.0.113.0/24", {"autonomous_system_number": 4134,
                            "autonomous_system_organization": "Chinanet"}),
        ("198.51.100.0/24", {"autonomous_system_number": 13335,
                             "autonomous_system_organization": "Cloudflare, Inc."}),
        ("192.0.2.0/24", {"autonomous_system_number": 4200000000,
                          "autonomous_system_organization": "Private 32-bit"}),
        ("2001:db8::/32", {"autonomous_system_number": MmdbU32(13335),
                           "autonomous_system_organization": "Cloudflare, Inc."}),
    ],
)

# GeoLite2-City layout (DB-IP lite city is the same shape without registered_country).
berlin = {
    "city": {"geoname_id": 2950159, "names": names("Berlin")},
    "continent": {"code": "EU", "geoname_id": 6255148, "names": names("Europe")},
    "country": country("DE", 2921044, eu=True),
    "location": {"accuracy_radius": 200, "latitude": 52.5196, "longitude": 13.4069,
                 "time_zone": "Europe/Berlin"},
    "postal": {"code": "10115"},
    "registered_country": country("DE", 2921044, eu=True),
    "subdivisions": [{"geoname_id": 2950157, "iso_code": "BE", "names": names("Land Berlin")}],
}
write(
    "geolite2-city.mmdb",
    "GeoLite2-City",
    [("203.0.113.0/24", berlin), ("2001:db8::/32", berlin)],
)

# DB-IP lite country layout.
write(
    "dbip-country-lite.mmdb",
    "DBIP-Country-Lite",
    [
        ("203.0.113.0/24", {"continent": {"code": "AS", "geoname_id": 6255147,
                                          "names": names("Asia")},
                            "country": country("CN", 1814991)}),
        ("198.51.100.0/24", {"continent": {"code": "NA", "geoname_id": 6255149,
                                           "names": names("North America")},
                             "country": country("US", 6252001)}),
    ],
)

# IPinfo lite: `asn` as a string, `country_code`, `country` as the name.
def ipinfo(asn, name, cc, country_name):
    return {"as_domain": "example.net", "as_name": name, "asn": asn,
            "continent": "Asia", "continent_code": "AS",
            "country": country_name, "country_code": cc}


write(
    "ipinfo-lite.mmdb",
    "ipinfo_lite.mmdb",
    [
        ("203.0.113.0/24", ipinfo("AS4134", "Chinanet", "CN", "China")),
        ("198.51.100.0/24", ipinfo("AS13335", "Cloudflare, Inc.", "US", "United States")),
        ("2001:db8::/32", ipinfo("AS13335", "Cloudflare, Inc.", "US", "United States")),
    ],
)

# ip-location-db country layout.
write(
    "ip-location-db-country.mmdb",
    "geo-whois-asn-country",
    [("203.0.113.0/24", {"country_code": "CN"}), ("2001:db8::/32", {"country_code": "DE"})],
)
