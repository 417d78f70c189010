//! Connecting to etcd, as configured: endpoints, TLS with a CA and a client certificate, user and password.
//! The password and key are never logged: errors carry etcd's message and the endpoint list only.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::ClusterError;
use crate::gateway::config::ClusterConfig;

/// How long one etcd request may take before the caller gives up on it (and, for a lease renewal, counts it
/// as missed).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for the configured etcd. Fails only on unreadable TLS files or bad endpoints; an etcd that is
/// down is noticed on the first request (and retried by the caller).
pub async fn connect(config: &ClusterConfig) -> Result<Client, ClusterError> {
    let tls = config.etcd_ca_file.is_some() || config.etcd_cert_file.is_some();
    let endpoints: Vec<String> = config
        .etcd_endpoints
        .iter()
        .map(|e| match (e.contains("://"), tls) {
            (true, _) => e.clone(),
            (false, true) => format!("https://{e}"),
            (false, false) => format!("http://{e}"),
        })
        .collect();
    let mut options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), REQUEST_TIMEOUT)
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (&config.etcd_user, &config.etcd_password) {
        options = options.with_user(user.clone(), password.clone());
    }
    if tls {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.etcd_ca_file {
            let pem = std::fs::read(ca).map_err(|e| ClusterError::Config(format!("cluster.etcd_ca_file: {e}")))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&config.etcd_cert_file, &config.etcd_key_file) {
            let cert = std::fs::read(cert).map_err(|e| ClusterError::Config(format!("cluster.etcd_cert_file: {e}")))?;
            let key = std::fs::read(key).map_err(|e| ClusterError::Config(format!("cluster.etcd_key_file: {e}")))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        options = options.with_tls(tls);
    }
    // Connecting with a user authenticates at once, which needs etcd up: retry that until it answers.
    Client::connect(endpoints.clone(), Some(options)).await.map_err(|e| ClusterError::Etcd {
        doing: format!("connecting to {}", endpoints.join(",")),
        message: e.to_string(),
    })
}
