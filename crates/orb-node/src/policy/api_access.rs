//! Who may use the client daemon's local API: its owner, through the CLI
//! and the daemon's own dashboard, and no web page the owner happens to
//! visit.
//!
//! Browsers let any page send "simple" cross-origin requests (a POST with a
//! `text/plain` body, say) without asking, and a page can rebind its own
//! DNS name to 127.0.0.1 to become "same-origin" with a local server. So:
//!
//! * every request must name the API itself in `Host` (its own IP and
//!   port, or `localhost`): a rebound name is refused;
//! * a request a browser marks as coming from another origin (`Origin`, or
//!   `Sec-Fetch-Site` of `cross-site` or `same-site`) is refused, except a
//!   top-level navigation to the dashboard page, and nothing may frame the
//!   page;
//! * endpoints that change something or read what only the owner may
//!   (deploy, invoke, remove, rollback, ping, versions, logs) need the
//!   daemon's token (`Authorization: Bearer TOKEN`), which the CLI reads
//!   from the data directory and the dashboard gets inside its own page.
//!   Sending that header from another origin would need a CORS preflight,
//!   which the API never approves;
//! * bound to a non-loopback address, every endpoint but the page needs
//!   the token, and the page does not carry it (anyone on the network could
//!   load it): the dashboard asks for it.

use std::net::IpAddr;

/// What an endpoint does, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The dashboard page (`GET /`).
    Page,
    /// A read anyone on this machine may do (status, functions, nodes,
    /// metrics...).
    Read,
    /// A read that is the owner's only (versions, logs).
    Owner,
    /// A request that changes something or costs the owner (deploy,
    /// invoke, remove, rollback, ping).
    Mutating,
}

/// Where the API listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiAddr {
    /// The IP it is bound to (may be unspecified: all interfaces).
    pub ip: IpAddr,
    /// Its port.
    pub port: u16,
}

/// What a request says about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts<'a> {
    /// `Host`.
    pub host: Option<&'a str>,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Sec-Fetch-Site`.
    pub fetch_site: Option<&'a str>,
    /// `Sec-Fetch-Mode`.
    pub fetch_mode: Option<&'a str>,
    /// `Sec-Fetch-Dest`.
    pub fetch_dest: Option<&'a str>,
    /// `None`: no token presented; `Some(ok)`: one was, right or wrong.
    pub token: Option<bool>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Serve it; `hand_token`: put the token in the dashboard page.
    Allow {
        /// Whether the page may carry the token.
        hand_token: bool,
    },
    /// Refuse with this HTTP status and reason.
    Refuse {
        /// 401 (token) or 403 (origin, host, framing).
        status: u16,
        /// Why, for the answer's body.
        reason: String,
    },
}

fn refuse(status: u16, reason: impl Into<String>) -> Access {
    Access::Refuse {
        status,
        reason: reason.into(),
    }
}

/// Whether `authority` (`HOST:PORT` as in `Host`) names this API.
pub fn own_authority(authority: &str, api: ApiAddr) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => (h, p),
            None => return false,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            _ => return false,
        }
    };
    if port.parse::<u16>().ok() != Some(api.port) {
        return false;
    }
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        // An IP literal cannot be rebound; the API's own IP (any local one
        // when it listens on all interfaces) and loopback are its names.
        Ok(ip) => {
            ip == api.ip || api.ip.is_unspecified() || (ip.is_loopback() && api.ip.is_loopback())
        }
        Err(_) => false,
    }
}

/// Decide whether a request to `endpoint` of the API at `api` is served.
pub fn decide(api: ApiAddr, endpoint: Endpoint, f: Facts<'_>) -> Access {
    let Some(host) = f.host.filter(|h| own_authority(h, api)) else {
        return refuse(
            403,
            format!(
                "Host {:?} is not this API's address (a web page behind a DNS name must not reach it); use http://127.0.0.1:{}/ or http://localhost:{}/",
                f.host.unwrap_or(""),
                api.port,
                api.port
            ),
        );
    };
    if matches!(
        f.fetch_dest,
        Some("iframe" | "frame" | "embed" | "object" | "fencedframe")
    ) {
        return refuse(403, "the local API may not be framed by another page");
    }
    if let Some(origin) = f.origin {
        let same = origin
            .strip_prefix("http://")
            .is_some_and(|a| a.eq_ignore_ascii_case(host));
        if !same {
            return refuse(
                403,
                format!(
                    "cross-origin request from {origin:?} refused: only the daemon's own pages and the CLI may use its API"
                ),
            );
        }
    }
    let navigation = endpoint == Endpoint::Page
        && f.fetch_mode == Some("navigate")
        && f.fetch_dest.is_none_or(|d| d == "document");
    if let Some(site @ ("cross-site" | "same-site")) = f.fetch_site
        && !navigation
    {
        return refuse(
            403,
            format!(
                "request from another site ({site}) refused: only the daemon's own pages and the CLI may use its API"
            ),
        );
    }
    let loopback = api.ip.is_loopback();
    let needs_token = match endpoint {
        Endpoint::Page => false,
        Endpoint::Read => !loopback,
        Endpoint::Owner | Endpoint::Mutating => true,
    };
    match f.token {
        Some(false) => refuse(401, "wrong API token"),
        None if needs_token => refuse(
            401,
            "this needs the daemon's API token (Authorization: Bearer TOKEN); the CLI reads it from the daemon's data directory (api-token), the dashboard gets it from its own page",
        ),
        _ => Access::Allow {
            hand_token: endpoint == Endpoint::Page && loopback,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: ApiAddr = ApiAddr {
        ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        port: 7790,
    };

    fn facts(host: &str) -> Facts<'_> {
        Facts {
            host: Some(host),
            ..Facts::default()
        }
    }

    fn allowed(a: &Access) -> bool {
        matches!(a, Access::Allow { .. })
    }

    #[test]
    fn own_names_only() {
        for ok in [
            "127.0.0.1:7790",
            "localhost:7790",
            "LOCALHOST:7790",
            "127.0.0.2:7790",
        ] {
            assert!(own_authority(ok, LOCAL), "{ok}");
        }
        for bad in [
            "evil.example:7790",
            "127.0.0.1:7791",
            "127.0.0.1",
            "localhost",
            "[::1]",
            "192.168.1.2:7790",
            "",
            ":7790",
        ] {
            assert!(!own_authority(bad, LOCAL), "{bad}");
        }
        let v6 = ApiAddr {
            ip: "::1".parse().expect("ip"),
            port: 1,
        };
        assert!(own_authority("[::1]:1", v6));
        let any = ApiAddr {
            ip: "0.0.0.0".parse().expect("ip"),
            port: 7790,
        };
        assert!(own_authority("192.168.1.2:7790", any));
        assert!(!own_authority("nas.local:7790", any));
    }

    #[test]
    fn the_cli_reads_freely_and_needs_the_token_to_change_things() {
        let cli = facts("127.0.0.1:7790");
        assert!(allowed(&decide(LOCAL, Endpoint::Read, cli)));
        let no_token = decide(LOCAL, Endpoint::Mutating, cli);
        assert!(matches!(no_token, Access::Refuse { status: 401, .. }));
        assert!(matches!(
            decide(LOCAL, Endpoint::Owner, cli),
            Access::Refuse { status: 401, .. }
        ));
        let with = Facts {
            token: Some(true),
            ..cli
        };
        assert!(allowed(&decide(LOCAL, Endpoint::Mutating, with)));
        let wrong = Facts {
            token: Some(false),
            ..cli
        };
        assert!(matches!(
            decide(LOCAL, Endpoint::Read, wrong),
            Access::Refuse { status: 401, .. }
        ));
    }

    #[test]
    fn web_pages_are_refused() {
        // A "simple" cross-origin POST from a page the owner visits.
        let page = Facts {
            host: Some("127.0.0.1:7790"),
            origin: Some("https://evil.example"),
            fetch_site: Some("cross-site"),
            fetch_mode: Some("no-cors"),
            token: Some(true),
            ..Facts::default()
        };
        for e in [Endpoint::Mutating, Endpoint::Read, Endpoint::Owner] {
            assert!(matches!(
                decide(LOCAL, e, page),
                Access::Refuse { status: 403, .. }
            ));
        }
        // No Origin, but the browser says cross-site (an <img>, a <script>).
        let img = Facts {
            origin: None,
            fetch_mode: Some("no-cors"),
            fetch_dest: Some("image"),
            ..page
        };
        assert!(!allowed(&decide(LOCAL, Endpoint::Read, img)));
        // DNS rebinding: same-origin to the browser, but a foreign Host.
        let rebound = Facts {
            host: Some("evil.example:7790"),
            origin: Some("http://evil.example:7790"),
            fetch_site: Some("same-origin"),
            token: None,
            ..Facts::default()
        };
        for e in [Endpoint::Page, Endpoint::Read, Endpoint::Mutating] {
            assert!(matches!(
                decide(LOCAL, e, rebound),
                Access::Refuse { status: 403, .. }
            ));
        }
        // Another local web app on another port is another origin too.
        let neighbour = Facts {
            origin: Some("http://127.0.0.1:8080"),
            fetch_site: Some("same-site"),
            ..facts("127.0.0.1:7790")
        };
        assert!(!allowed(&decide(LOCAL, Endpoint::Mutating, neighbour)));
        // Framing the dashboard (clickjacking) is refused.
        let framed = Facts {
            fetch_dest: Some("iframe"),
            fetch_mode: Some("navigate"),
            fetch_site: Some("cross-site"),
            ..facts("127.0.0.1:7790")
        };
        assert!(!allowed(&decide(LOCAL, Endpoint::Page, framed)));
    }

    #[test]
    fn the_dashboard_page_gets_the_token_only_on_loopback() {
        // Typed into the address bar, or followed from a link elsewhere.
        for site in [Some("none"), Some("cross-site"), None] {
            let nav = Facts {
                fetch_site: site,
                fetch_mode: Some("navigate"),
                fetch_dest: Some("document"),
                ..facts("localhost:7790")
            };
            assert_eq!(
                decide(LOCAL, Endpoint::Page, nav),
                Access::Allow { hand_token: true },
                "{site:?}"
            );
        }
        // Its own scripts, same-origin, with the token.
        let own = Facts {
            origin: Some("http://localhost:7790"),
            fetch_site: Some("same-origin"),
            token: Some(true),
            ..facts("localhost:7790")
        };
        assert!(allowed(&decide(LOCAL, Endpoint::Mutating, own)));
        // Origin must be the very host the page was loaded from.
        let mixed = Facts {
            origin: Some("http://127.0.0.1:7790"),
            ..own
        };
        assert!(!allowed(&decide(LOCAL, Endpoint::Mutating, mixed)));
        // On the network: the page without the token, everything else with it.
        let lan = ApiAddr {
            ip: "0.0.0.0".parse().expect("ip"),
            port: 7790,
        };
        let f = facts("192.168.1.2:7790");
        assert_eq!(
            decide(lan, Endpoint::Page, f),
            Access::Allow { hand_token: false }
        );
        assert!(matches!(
            decide(lan, Endpoint::Read, f),
            Access::Refuse { status: 401, .. }
        ));
        let with = Facts {
            token: Some(true),
            ..f
        };
        assert!(allowed(&decide(lan, Endpoint::Read, with)));
    }
}
