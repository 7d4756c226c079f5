//! Where the API server is and how to authenticate to it: `--kubeconfig`, then `KUBECONFIG`,
//! then the pod's service account (in-cluster), then `~/.kube/config`. The options
//! `k8sServiceHost`/`k8sServicePort` replace the server address whatever the source of the
//! rest: on a node without kube-proxy the `kubernetes` Service's ClusterIP, which in-cluster
//! configuration points at, is not reachable until this agent programs it.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Config;

use crate::source::SourceError;

/// Where a pod's service account token, CA and namespace are mounted.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach the API server.
#[derive(Clone, Debug, Default)]
pub struct ApiConnection {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `k8sServiceHost`.
    pub service_host: Option<String>,
    /// `k8sServicePort`.
    pub service_port: Option<u16>,
}

impl ApiConnection {
    /// The client configuration, and where it came from (for logs).
    pub async fn client_config(&self) -> Result<(Config, String), SourceError> {
        let (mut config, how) = self.base_config().await?;
        if self.service_host.is_some() || self.service_port.is_some() {
            config.cluster_url = self.server_url(&config.cluster_url)?;
            return Ok((
                config,
                format!("{how}, server from k8sServiceHost/k8sServicePort"),
            ));
        }
        Ok((config, how))
    }

    async fn base_config(&self) -> Result<(Config, String), SourceError> {
        if let Some(path) = &self.kubeconfig {
            return from_file(path, "--kubeconfig").await;
        }
        if let Some(paths) = std::env::var("KUBECONFIG").ok().filter(|v| !v.is_empty()) {
            let config = Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|e| api_error(format!("KUBECONFIG={paths}: {e}")))?;
            return Ok((config, format!("KUBECONFIG={paths}")));
        }
        // With k8sServiceHost set, the service account's token and CA are enough: the address
        // in KUBERNETES_SERVICE_HOST (a ClusterIP) is replaced anyway.
        let in_cluster = if self.service_host.is_some() {
            Config::incluster_dns()
        } else {
            Config::incluster()
        };
        let in_cluster_error = match in_cluster {
            Ok(config) => return Ok((config, "in-cluster service account".into())),
            Err(e) => self.in_cluster_problem(&e),
        };
        let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube/config"));
        if let Some(path) = home.as_deref().filter(|p| p.exists()) {
            return from_file(path, "~/.kube/config").await;
        }
        Err(api_error(format!(
            "no API server configuration found: --kubeconfig not given, KUBECONFIG not set, \
             {in_cluster_error}, and no {}",
            home.map_or("~/.kube/config (HOME unset)".into(), |p| p
                .display()
                .to_string())
        )))
    }

    /// Why in-cluster configuration failed, in the terms a user can check.
    fn in_cluster_problem(&self, error: &dyn std::fmt::Display) -> String {
        if self.service_host.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            return "not in a cluster: KUBERNETES_SERVICE_HOST is not set and neither is \
                    k8sServiceHost"
                .into();
        }
        let token = Path::new(SERVICE_ACCOUNT_DIR).join("token");
        if !token.exists() {
            return format!("no service account token at {}", token.display());
        }
        format!("in-cluster configuration from {SERVICE_ACCOUNT_DIR}: {error}")
    }

    /// `https://HOST:PORT/`, each part from the options where set, else from `current`.
    fn server_url(&self, current: &http::Uri) -> Result<http::Uri, SourceError> {
        let host = match &self.service_host {
            Some(h) if h.parse::<Ipv6Addr>().is_ok() => format!("[{h}]"),
            Some(h) => h.clone(),
            None => current.host().unwrap_or_default().to_owned(),
        };
        let port = self
            .service_port
            .or_else(|| current.port_u16())
            .unwrap_or(443);
        let url = format!("https://{host}:{port}/");
        url.parse().map_err(|e| {
            api_error(format!(
                "k8sServiceHost/k8sServicePort make {url:?}, not a URL: {e}"
            ))
        })
    }
}

async fn from_file(path: &Path, what: &str) -> Result<(Config, String), SourceError> {
    let failed = |e: &dyn std::fmt::Display| api_error(format!("{what} {}: {e}", path.display()));
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| failed(&e))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| failed(&e))?;
    Ok((config, format!("{what} {}", path.display())))
}

fn api_error(detail: String) -> SourceError {
    SourceError::Api { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: Option<&str>, port: Option<u16>, current: &str) -> String {
        ApiConnection {
            kubeconfig: None,
            service_host: host.map(str::to_owned),
            service_port: port,
        }
        .server_url(&current.parse().unwrap())
        .unwrap()
        .to_string()
    }

    #[test]
    fn the_options_replace_the_address_part_by_part() {
        let current = "https://kubernetes.default.svc/";
        assert_eq!(
            url(Some("192.168.1.10"), Some(6443), current),
            "https://192.168.1.10:6443/"
        );
        assert_eq!(
            url(Some("api.example"), None, current),
            "https://api.example:443/"
        );
        assert_eq!(
            url(None, Some(6443), "https://10.96.0.1:443"),
            "https://10.96.0.1:6443/"
        );
        assert_eq!(
            url(Some("fd00::1"), Some(6443), current),
            "https://[fd00::1]:6443/"
        );
    }

    #[test]
    fn a_missing_kubeconfig_file_is_named() {
        let conn = ApiConnection {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..ApiConnection::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime.block_on(conn.client_config()).unwrap_err();
        assert!(
            err.to_string()
                .contains("--kubeconfig /nonexistent/kubeconfig"),
            "{err}"
        );
    }
}
