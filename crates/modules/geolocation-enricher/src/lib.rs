//! Adds `geo-country` and `geo-region` headers from the `client_ip` header,
//! looked up in a CIDR table (the longest matching prefix wins).
//!
//! `custom_config`: `{"networks": [{"cidr": "203.0.113.0/24", "country": "AU",
//! "region": "NSW"}, ...]}`; IPv4 and IPv6. An address in no network gets
//! `geo-country: unknown`; a message without a `client_ip` header, or with one
//! that is not an address, passes on unchanged.
use std::net::IpAddr;

use rustmq_etl_sdk::{export, Message, Outcome};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    cidr: String,
    country: String,
    #[serde(default)]
    region: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    networks: Vec<Entry>,
}

struct Network {
    address: u128,
    prefix: u32,
    v6: bool,
    country: String,
    region: Option<String>,
}

fn bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, false),
        IpAddr::V6(v6) => (u128::from(v6), true),
    }
}

fn mask(prefix: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    }
}

/// What a refused `custom_config` is shown.
const EXAMPLE: &str =
    r#"{"networks": [{"cidr": "203.0.113.0/24", "country": "AU", "region": "NSW"}]}"#;

fn init(custom_config: &str) -> Result<Vec<Network>, String> {
    let config: Config = rustmq_etl_sdk::json::optional_config(custom_config, EXAMPLE)?;
    config
        .networks
        .into_iter()
        .map(|entry| {
            let (ip, len) = entry
                .cidr
                .split_once('/')
                .ok_or_else(|| format!("{:?} is not a CIDR (address/length)", entry.cidr))?;
            let ip: IpAddr = ip.parse().map_err(|e| format!("{:?}: {e}", entry.cidr))?;
            let len: u32 = len.parse().map_err(|e| format!("{:?}: {e}", entry.cidr))?;
            // IPv4 addresses sit in the top 32 of the 128 bits, so a prefix
            // length counts from the top for both families.
            let (address, v6) = bits(ip);
            let prefix = len;
            let longest = if v6 { 128 } else { 32 };
            if prefix > longest {
                return Err(format!("{:?}: prefix longer than {longest}", entry.cidr));
            }
            Ok(Network {
                address: address & mask(prefix),
                prefix,
                v6,
                country: entry.country,
                region: entry.region,
            })
        })
        .collect()
}

fn enrich(networks: &Vec<Network>, message: &Message) -> Outcome {
    let networks: &[Network] = networks;
    let Some(ip) = message
        .header("client_ip")
        .and_then(|h| h.trim().parse::<IpAddr>().ok())
    else {
        return Outcome::Unchanged;
    };
    let (address, v6) = bits(ip);
    let best = networks
        .iter()
        .filter(|n| n.v6 == v6 && address & mask(n.prefix) == n.address)
        .max_by_key(|n| n.prefix);
    match best {
        Some(n) => {
            let edits = Outcome::edit().set_header("geo-country", n.country.as_str());
            match &n.region {
                Some(region) => edits.set_header("geo-region", region.as_str()).into(),
                None => edits.into(),
            }
        }
        None => Outcome::edit().set_header("geo-country", "unknown").into(),
    }
}

export!(init = init, transform = enrich);
