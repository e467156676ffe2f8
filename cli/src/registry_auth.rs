//! `--with-registry-auth`: this client's credentials for an image's
//! registry, read from docker's `config.json` (what `docker login` writes)
//! and sent as docker's X-Registry-Auth (base64url of a small JSON).

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;

/// docker's key for Docker Hub in `auths`.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".docker")
            .join("config.json"),
    }
}

/// The registry host an image reference names, as docker keys `auths`.
fn registry_of(image: &str) -> String {
    match shoal_api::reference::Reference::parse(image) {
        Ok(r) if r.domain != "docker.io" => r.domain,
        _ => DOCKER_HUB_KEY.to_owned(),
    }
}

/// The X-Registry-Auth for `image` from the config file's text; empty when
/// it holds no credentials for that registry.
pub fn from_config(config: &str, image: &str) -> anyhow::Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(config).context("docker's config.json is not JSON")?;
    let registry = registry_of(image);
    let auths = v.get("auths").and_then(|a| a.as_object());
    let entry = auths.and_then(|a| {
        a.get(&registry).or_else(|| {
            // `docker login https://reg:5000` keys by URL.
            a.iter()
                .find(|(k, _)| {
                    k.trim_start_matches("https://")
                        .trim_start_matches("http://")
                        .trim_end_matches('/')
                        == registry
                })
                .map(|(_, v)| v)
        })
    });
    let Some(encoded) = entry.and_then(|e| e.get("auth")).and_then(|a| a.as_str()) else {
        if v.get("credsStore").is_some() || v.get("credHelpers").is_some() {
            anyhow::bail!(
                "--with-registry-auth: docker's config.json keeps its credentials in a helper \
                 (credsStore/credHelpers), which shoal does not read; log in with a plain \
                 config (DOCKER_CONFIG=DIR docker login {registry})"
            );
        }
        return Ok(String::new());
    };
    let plain = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .context("--with-registry-auth: the auth entry is not base64; run `docker login` again")?;
    let plain = String::from_utf8(plain)
        .context("--with-registry-auth: the auth entry is not text; run `docker login` again")?;
    let (username, password) = plain.split_once(':').context(
        "--with-registry-auth: the auth entry is not user:password; run `docker login` again",
    )?;
    let header = serde_json::json!({
        "username": username,
        "password": password,
        "serveraddress": registry,
    });
    Ok(base64::engine::general_purpose::URL_SAFE.encode(header.to_string()))
}

/// The X-Registry-Auth for `image` from this user's docker config.
pub fn for_image(image: &str) -> anyhow::Result<String> {
    let path = config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "--with-registry-auth: no {} (log in first: docker login {})",
                path.display(),
                registry_of(image)
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    from_config(&text, image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(h: &str) -> serde_json::Value {
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(h)
            .expect("base64url");
        serde_json::from_slice(&raw).expect("json")
    }

    #[test]
    fn credentials_for_the_images_registry() {
        let auth = base64::engine::general_purpose::STANDARD.encode("lab:s3cr:et");
        let config = format!(
            r#"{{"auths":{{"198.18.0.250:5000":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"auth":"{auth}"}}}}}}"#
        );
        let h = from_config(&config, "198.18.0.250:5000/lab/web:v1").expect("found");
        let v = decode(&h);
        assert_eq!(v["username"], "lab");
        assert_eq!(v["password"], "s3cr:et");
        assert_eq!(v["serveraddress"], "198.18.0.250:5000");
        let hub = decode(&from_config(&config, "redis:alpine").expect("hub"));
        assert_eq!(hub["serveraddress"], DOCKER_HUB_KEY);
        assert_eq!(from_config(&config, "other.reg/x").expect("none"), "");
        let helper = r#"{"auths":{},"credsStore":"desktop"}"#;
        let e = from_config(helper, "reg:5000/x").expect_err("helper");
        assert!(e.to_string().contains("credsStore"), "{e}");
        assert!(from_config("not json", "x").is_err());
        let url_keyed = format!(r#"{{"auths":{{"https://reg:5000/":{{"auth":"{auth}"}}}}}}"#);
        assert_ne!(from_config(&url_keyed, "reg:5000/x").expect("url key"), "");
    }

    proptest! {
        #[test]
        fn any_config_text_is_an_answer_or_an_error(config in ".{0,300}", image in "[a-z0-9:/.@-]{0,40}") {
            let _ = from_config(&config, &image);
        }
    }
}
