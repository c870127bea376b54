//! Policy files: parsing, validation and compilation into kernel prefixes.
