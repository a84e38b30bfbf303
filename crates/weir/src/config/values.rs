//! Value grammar: strings, booleans, paths, path prefixes, TLS server names, service
//! names, addresses, header names, versions, and sizes and durations with their units and
//! bounds, each parsed to its typed value or a message saying what was expected.

use super::*;

pub(super) fn expected(what: &str, item: &Item) -> String {
    format!("expected {what}, found {}", item.type_name())
}

pub(super) fn string(item: &Item) -> Result<String, String> {
    item.as_str().map(str::to_owned).ok_or_else(|| expected("a string", item))
}

pub(super) fn non_empty_string(item: &Item) -> Result<String, String> {
    let text = string(item)?;
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(text)
}

/// A file path, relative to the working directory unless absolute.
pub(super) fn file_path(item: &Item) -> Result<PathBuf, String> {
    let text = item.as_str().ok_or_else(|| expected("a file path string", item))?;
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(text))
}

/// A non-empty array of literal path prefixes, each starting with `/`.
pub(super) fn path_prefixes(item: &Item) -> Result<Vec<String>, String> {
    let array = item.as_array().ok_or_else(|| expected("an array of path prefixes such as [\"/api\"]", item))?;
    if array.is_empty() {
        return Err("must list at least one prefix (\"/\" allows every path)".to_owned());
    }
    let mut prefixes = Vec::with_capacity(array.len());
    for value in array.iter() {
        let prefix = value.as_str().ok_or_else(|| format!("expected prefix strings, found {}", value.type_name()))?;
        if !prefix.starts_with('/') {
            return Err(format!("prefix `{prefix}` must start with `/`"));
        }
        if let Some(bad) = prefix.chars().find(|c| "{}?#".contains(*c) || c.is_whitespace()) {
            return Err(format!("prefix `{prefix}` must be a literal path ({bad:?} is not allowed)"));
        }
        prefixes.push(prefix.to_owned());
    }
    Ok(prefixes)
}

/// An array of networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`), or single addresses
/// (`192.0.2.1`, taken as the one-address network). May be empty.
pub(super) fn networks(item: &Item) -> Result<Vec<ipnet::IpNet>, String> {
    let array = item.as_array().ok_or_else(|| expected("an array of networks such as [\"10.0.0.0/8\"]", item))?;
    let mut networks = Vec::with_capacity(array.len());
    for value in array.iter() {
        let text = value.as_str().ok_or_else(|| format!("expected network strings, found {}", value.type_name()))?;
        let network = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| format!("`{text}` is not an address or a network in CIDR notation (`10.0.0.0/8`)"))?;
        networks.push(network);
    }
    Ok(networks)
}

pub(super) fn boolean(item: &Item) -> Result<bool, String> {
    item.as_bool().ok_or_else(|| expected("true or false", item))
}

/// A non-empty array of TLS server names: DNS names (`api.example.com`) or one-label
/// wildcards (`*.example.com`), compared without regard to case.
pub(super) fn server_names(item: &Item) -> Result<Vec<String>, String> {
    let array = item.as_array().ok_or_else(|| expected("an array of names such as [\"example.com\"]", item))?;
    if array.is_empty() {
        return Err("must list at least one name".to_owned());
    }
    let mut names = Vec::with_capacity(array.len());
    for value in array.iter() {
        let name = value.as_str().ok_or_else(|| format!("expected name strings, found {}", value.type_name()))?;
        let base = name.strip_prefix("*.").unwrap_or(name);
        // A wildcard over a top-level domain (`*.com`) is no name anyone can hold.
        let labels_ok = base.split('.').count() >= 2 || name == base;
        let valid = !base.is_empty()
            && labels_ok
            && base.parse::<std::net::IpAddr>().is_err()
            && base.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(format!("`{name}` is not a DNS name or a one-label wildcard such as `*.example.com`"));
        }
        names.push(name.to_ascii_lowercase());
    }
    Ok(names)
}

/// An array of service names, each non-empty and listed once. May be empty.
pub(super) fn service_names(item: &Item) -> Result<Vec<String>, String> {
    let array = item.as_array().ok_or_else(|| expected("an array of service names such as [\"demo\"]", item))?;
    let mut names: Vec<String> = Vec::with_capacity(array.len());
    for value in array.iter() {
        let name =
            value.as_str().ok_or_else(|| format!("expected service name strings, found {}", value.type_name()))?;
        if name.is_empty() {
            return Err("a service name must not be empty".to_owned());
        }
        if names.iter().any(|listed| listed == name) {
            return Err(format!("`{name}` is listed twice"));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

pub(super) fn socket_addr(item: &Item) -> Result<SocketAddr, String> {
    let text = item.as_str().ok_or_else(|| expected("a socket address string", item))?;
    text.parse().map_err(|_| {
        format!("`{text}` is not a socket address (write IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::1]:8080\")")
    })
}

/// A lowercase HTTP header name: one or more RFC 9110 token characters, no uppercase.
pub(super) fn header_name(item: &Item) -> Result<String, String> {
    let name = string(item)?;
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(bad) = name.chars().find(|&c| !is_tchar(c)) {
        return Err(format!("`{name}` is not a valid HTTP header name ({bad:?} is not allowed)"));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("must be lowercase: write `{}`", name.to_ascii_lowercase()));
    }
    Ok(name)
}

/// A service's default version: a strict semantic version such as `1.4.0`.
pub(super) fn service_version(service: &str, item: &Item) -> Result<String, String> {
    if service.is_empty() {
        return Err("service name must not be empty".to_owned());
    }
    let text = item.as_str().ok_or_else(|| expected("a version string such as \"1.2.0\"", item))?;
    match semver::Version::parse(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(format!("`{text}` is not a semantic version MAJOR.MINOR.PATCH: {e}")),
    }
}

/// A size in bytes within `min..=max`, converted to the field's integer type.
pub(super) fn size<T: TryFrom<u64>>(min: u64, max: u64) -> impl Fn(&Item) -> Result<T, String> {
    move |item| {
        let bytes = if let Some(n) = item.as_integer() {
            u64::try_from(n).map_err(|_| "must not be negative".to_owned())?
        } else if let Some(text) = item.as_str() {
            parse_size(text)?
        } else if item.as_float().is_some() {
            return Err("fractions are not allowed: use whole bytes or a smaller unit, e.g. \"1536KiB\"".to_owned());
        } else {
            return Err(expected("a size (integer bytes, or a string such as \"64KiB\")", item));
        };
        if bytes == 0 {
            return Err("must be greater than zero".to_owned());
        }
        within(bytes, min, max, show_size)?;
        T::try_from(bytes).map_err(|_| format!("{} is too large for this platform", show_size(&bytes)))
    }
}

/// `"512"`, `"64KiB"`, `"10MB"`, ...: whole number, optional space, case-insensitive unit.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => KIB,
        "mib" => MIB,
        "gib" => GIB,
        "tib" => TIB,
        _ => {
            return Err(format!("unknown size unit `{unit}` in `{text}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"))
        }
    };
    number.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration: integer seconds or a string such as `"300ms"`; nonzero, at most 24 h.
pub(super) fn duration(item: &Item) -> Result<Duration, String> {
    let value = if let Some(n) = item.as_integer() {
        Duration::from_secs(u64::try_from(n).map_err(|_| "must not be negative".to_owned())?)
    } else if let Some(text) = item.as_str() {
        parse_duration(text)?
    } else if item.as_float().is_some() {
        return Err("fractions are not allowed: use a smaller unit, e.g. \"1500ms\"".to_owned());
    } else {
        return Err(expected("a duration (integer seconds, or a string such as \"5s\")", item));
    };
    if value.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    within(value, Duration::ZERO, MAX_DURATION, show_duration)?;
    Ok(value)
}

/// `"250us"`, `"300ms"`, `"5s"`, `"2m"`, `"1h"`, or a bare number of seconds.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text)?;
    let too_large = || format!("`{text}` is too large");
    match unit.to_ascii_lowercase().as_str() {
        "us" | "µs" => Ok(Duration::from_micros(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs).ok_or_else(too_large),
        "h" => number.checked_mul(3600).map(Duration::from_secs).ok_or_else(too_large),
        _ => Err(format!("unknown duration unit `{unit}` in `{text}` (use us, ms, s, m or h)")),
    }
}

/// Splits `"64 KiB"` into `64` and `"KiB"`, rejecting signs, fractions and overflow.
pub(super) fn split_number(text: &str) -> Result<(u64, &str), String> {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, rest) = text.split_at(end);
    if text.starts_with('-') {
        return Err(format!("`{text}` is negative"));
    }
    if rest.starts_with('.') || rest.starts_with(',') {
        return Err(format!("`{text}` has a fraction: use a whole number of a smaller unit"));
    }
    if digits.is_empty() {
        return Err(format!("`{text}` does not start with a number"));
    }
    let number = digits.parse::<u64>().map_err(|_| format!("`{text}` is too large"))?;
    Ok((number, rest.trim_start()))
}

pub(super) fn within<T: PartialOrd>(value: T, min: T, max: T, show: fn(&T) -> String) -> Result<(), String> {
    if value < min {
        return Err(format!("{} is below the minimum of {}", show(&value), show(&min)));
    }
    if value > max {
        return Err(format!("{} is above the maximum of {}", show(&value), show(&max)));
    }
    Ok(())
}

/// `8 MiB`, `1536 KiB`, `1000 bytes`: the largest binary unit that divides exactly.
pub(super) fn show_size(bytes: &u64) -> String {
    let units = [(" TiB", TIB), (" GiB", GIB), (" MiB", MIB), (" KiB", KIB), (" bytes", 1)];
    in_largest_unit(u128::from(*bytes), &units.map(|(name, scale)| (name, u128::from(scale))))
}

/// `1h`, `90s`, `300ms`, `250us`: the largest unit of the grammar that divides exactly.
pub(super) fn show_duration(d: &Duration) -> String {
    const S: u128 = 1_000_000_000;
    let units = [("h", 3600 * S), ("m", 60 * S), ("s", S), ("ms", S / 1000), ("us", S / 1_000_000), ("ns", 1)];
    in_largest_unit(d.as_nanos(), &units)
}

/// `value` written in the first of `units` (largest first, smallest 1) that divides it.
pub(super) fn in_largest_unit(value: u128, units: &[(&str, u128)]) -> String {
    let fits = |scale: u128| value.checked_rem(scale) == Some(0) && (value >= scale || scale == 1);
    match units.iter().find(|(_, scale)| fits(*scale)) {
        Some((name, scale)) => format!("{}{name}", value / scale),
        None => format!("{value}"),
    }
}
