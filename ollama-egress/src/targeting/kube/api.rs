//! The API server, as a pod sees it: in-cluster configuration (`KUBERNETES_SERVICE_HOST` and
//! `_PORT`, the service account's token and CA), and the one request targeting makes, the pods
//! of this node that a selector matches. Blocking (ureq): the daemon calls it off its loop.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    KubeError,
    pods::{Pod, parse_pod_list, status_message},
    selector::Selector,
};

/// Where Kubernetes mounts a pod's service account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The largest pod list read (one node's pods that match a selector are a few kilobytes).
pub const MAX_LIST_BYTES: u64 = 4 << 20;

/// How long one request may take in all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSpec {
    /// `https://HOST:PORT`; `None`: from `KUBERNETES_SERVICE_HOST`/`_PORT`.
    pub url: Option<String>,
    /// Allows an `http://` URL (tests only: no TLS, the token in the clear).
    pub insecure_http: bool,
    /// The service account directory (`token`, `ca.crt`).
    pub service_account: PathBuf,
}

impl Default for ApiSpec {
    fn default() -> Self {
        Self {
            url: None,
            insecure_http: false,
            service_account: PathBuf::from(SERVICE_ACCOUNT_DIR),
        }
    }
}

/// A client of the API server.
pub struct ApiClient {
    agent: ureq::Agent,
    base: String,
    token: PathBuf,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish()
    }
}

/// The API server's base URL: the one given, else the in-cluster service's.
pub fn base_url(spec: &ApiSpec, env: impl Fn(&str) -> Option<String>) -> Result<String, KubeError> {
    let url = match &spec.url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty());
            let port = env("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty());
            let (Some(host), Some(port)) = (host, port) else {
                return Err(KubeError::NotInCluster);
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            format!("https://{host}:{port}")
        }
    };
    let uri: ureq::http::Uri = url.parse().map_err(|e| KubeError::BadUrl {
        url: url.clone(),
        detail: format!("{e}"),
    })?;
    if uri.host().is_none_or(str::is_empty) || uri.path() != "/" && !uri.path().is_empty() {
        return Err(KubeError::BadUrl {
            url,
            detail: "expected scheme://HOST[:PORT] with no path".to_owned(),
        });
    }
    match uri.scheme_str() {
        Some("https") => Ok(url),
        Some("http") if spec.insecure_http => Ok(url),
        Some("http") => Err(KubeError::InsecureUrl { url }),
        _ => Err(KubeError::BadUrl {
            url,
            detail: "the scheme must be https".to_owned(),
        }),
    }
}

impl ApiClient {
    /// A client for `spec`, with the service account's CA as the only trusted root for https.
    pub fn new(spec: &ApiSpec) -> Result<Self, KubeError> {
        let base = base_url(spec, |k| std::env::var(k).ok())?;
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            // The API server is the cluster's own service: never through an environment proxy.
            .proxy(None)
            .user_agent(concat!("ollama-egress/", env!("CARGO_PKG_VERSION")));
        if base.starts_with("https:") {
            let ca = spec.service_account.join("ca.crt");
            let certs = read_ca(&ca)?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let client = Self {
            agent: config.build().into(),
            base,
            token: spec.service_account.join("token"),
        };
        // A missing token is said now, not at the first list.
        client.bearer()?;
        Ok(client)
    }

    /// The API server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `Bearer TOKEN`, the token read afresh: kubelet rotates projected tokens in place.
    fn bearer(&self) -> Result<String, KubeError> {
        let text =
            std::fs::read_to_string(&self.token).map_err(|source| KubeError::ServiceAccount {
                path: self.token.clone(),
                source,
            })?;
        let token = text.trim();
        if token.is_empty()
            || token.len() > 64 << 10
            || token.bytes().any(|b| !(0x21..=0x7e).contains(&b))
        {
            return Err(KubeError::BadToken {
                path: self.token.clone(),
            });
        }
        Ok(format!("Bearer {token}"))
    }

    /// The pods on `node` that `selector` matches, in every namespace or in `namespace`
    /// (`GET /api/v1/[namespaces/NS/]pods?labelSelector=…&fieldSelector=spec.nodeName=NODE`).
    pub fn list_pods(
        &self,
        selector: &Selector,
        node: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Pod>, KubeError> {
        let url = match namespace {
            Some(ns) => format!("{}/api/v1/namespaces/{ns}/pods", self.base),
            None => format!("{}/api/v1/pods", self.base),
        };
        let request_err = |e: ureq::Error| KubeError::Request {
            url: url.clone(),
            detail: describe(&e),
        };
        let mut resp = self
            .agent
            .get(&url)
            .query("labelSelector", selector.to_string())
            .query("fieldSelector", format!("spec.nodeName={node}"))
            .header("Authorization", self.bearer()?)
            .header("Accept", "application/json")
            .call()
            .map_err(request_err)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_LIST_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => KubeError::TooLarge {
                    url: url.clone(),
                    limit: MAX_LIST_BYTES,
                },
                e => request_err(e),
            })?;
        if status != 200 {
            let message = status_message(&body).unwrap_or_else(|| {
                String::from_utf8_lossy(&body[..body.len().min(200)])
                    .trim()
                    .to_owned()
            });
            return Err(match status {
                401 | 403 => KubeError::Refused {
                    url,
                    status,
                    message,
                },
                _ => KubeError::Status {
                    url,
                    status,
                    message,
                },
            });
        }
        parse_pod_list(&body).map_err(|detail| KubeError::BadJson { url, detail })
    }
}

fn read_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, KubeError> {
    let pem = std::fs::read(path).map_err(|source| KubeError::ServiceAccount {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(KubeError::NoCaCert {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A request error in words; a timeout says which.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!(
            "timed out ({t:?}; each request may take {} s, connecting {} s)",
            REQUEST_TIMEOUT.as_secs(),
            CONNECT_TIMEOUT.as_secs()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
