//! [`OrderSystemBuilder`]: the parts a system is built from, defaulting to what the
//! configuration names.

use super::*;

/// Builds an [`OrderSystem`] from a [`Config`] and, optionally, explicit parts.
#[derive(Debug, Default)]
pub struct OrderSystemBuilder {
    config: Option<Config>,
    storage: Option<DynStorage>,
    provider: Option<Arc<dyn PaymentProvider>>,
    notifiers: Vec<Arc<dyn Notifier>>,
    clock: Option<DynClock>,
}

impl OrderSystemBuilder {
    /// Reads time from `clock` instead of the system's clocks (tests move a
    /// [`crate::clock::ManualClock`] forward instead of sleeping).
    pub fn clock(mut self, clock: DynClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Uses `config` (otherwise [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Uses this storage instead of opening `config.database_url`.
    pub fn storage(mut self, storage: DynStorage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Uses this payment provider instead of the mock.
    pub fn provider(mut self, provider: Arc<dyn PaymentProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Adds a notifier; when any is added, `config.notifiers` is ignored and exactly the added
    /// notifiers' channels get outbox rows.
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    /// Opens storage (running migrations), loads or creates the signing secret, and builds the
    /// system.
    pub async fn build(self) -> Result<OrderSystem> {
        let config = self.config.unwrap_or_default();
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let storage = match self.storage {
            Some(s) => s,
            None => crate::storage::open_config(&config).await?,
        };
        let provider = match self.provider {
            Some(provider) => provider,
            None => provider_from_config(&config)?,
        };
        let notifiers =
            if self.notifiers.is_empty() { notifiers_from_config(&config, &storage, &clock)? } else { self.notifiers };
        let secret = match &config.jwt_secret {
            Some(s) => {
                crate::config::check_jwt_secret(s.expose()).map_err(|m| Error::invalid("SOM_JWT_SECRET", m))?;
                s.expose().as_bytes().to_vec()
            }
            None => {
                let candidate = crate::util::random_token(32).into_bytes();
                crate::storage::complete(
                    &storage,
                    |s| async move { s.get_or_init_setting("jwt_secret", candidate).await },
                )
                .await?
            }
        };
        let ttl = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let keys = TokenKeys::new(
            &secret,
            ttl(config.access_token_ttl),
            ttl(config.refresh_token_ttl),
            ttl(config.session_max_age),
        )?;
        let mut channels: Vec<String> = notifiers.iter().map(|n| n.channel().to_owned()).collect();
        channels.dedup();
        let recent_writes = (!storage.replicas().is_empty()).then(|| {
            let remembered = crate::storage::freshness::remembered_for(config.replica_max_lag);
            crate::storage::freshness::RecentWrites::new(remembered)
        });
        let system = OrderSystem {
            inner: Arc::new(Inner {
                hasher: PasswordHasher::new(config.password_hash_concurrency),
                login_failures: LoginFailures::new(
                    config.login_failure_limit,
                    crate::config::LOGIN_FAILURE_WINDOW,
                    Arc::clone(&clock),
                ),
                storage,
                provider,
                notifiers,
                channels,
                keys,
                sessions: SessionCache::new(config.session_cache_ttl, Arc::clone(&clock)),
                clock,
                config,
                wake: Arc::new(Notify::new()),
                order_locks: KeyedLocks::default(),
                payment_locks: KeyedLocks::default(),
                refund_locks: KeyedLocks::default(),
                recent_writes,
            }),
        };
        #[cfg(feature = "webhook")]
        system.configure_webhook_endpoints().await?;
        Ok(system)
    }
}

fn provider_from_config(config: &Config) -> Result<Arc<dyn PaymentProvider>> {
    match config.payment_provider.as_str() {
        #[cfg(feature = "stripe")]
        "stripe" => {
            let secret_key = config
                .stripe_secret_key
                .clone()
                .ok_or_else(|| Error::invalid("SOM_STRIPE_SECRET_KEY", "is required by the stripe provider"))?;
            Ok(Arc::new(crate::payment::StripeProvider::new(crate::payment::StripeConfig {
                secret_key,
                webhook_secret: config.stripe_webhook_secret.clone(),
                api_base: config.stripe_api_base.clone(),
                timeout: config.stripe_timeout,
            })?))
        }
        #[cfg(not(feature = "stripe"))]
        "stripe" => {
            Err(Error::invalid("SOM_PAYMENT_PROVIDER", "this build has no Stripe support (cargo feature `stripe`)"))
        }
        _ => Ok(Arc::new(MockProvider::new(config.mock_transient_failures))),
    }
}

fn notifiers_from_config(config: &Config, storage: &DynStorage, clock: &DynClock) -> Result<Vec<Arc<dyn Notifier>>> {
    let _ = (storage, clock);
    #[cfg_attr(not(any(feature = "nats", feature = "amqp")), allow(unused_mut))]
    let mut notifiers: Vec<Arc<dyn Notifier>> = config
        .notifiers
        .iter()
        .map(|name| -> Result<Arc<dyn Notifier>> {
            match name.as_str() {
                "log" => Ok(Arc::new(LogNotifier)),
                #[cfg(feature = "smtp")]
                "smtp" => {
                    let url = config
                        .smtp_url
                        .as_ref()
                        .ok_or_else(|| Error::invalid("SOM_SMTP_URL", "is required by the smtp channel"))?;
                    Ok(Arc::new(crate::notify::SmtpNotifier::new(
                        url.expose(),
                        &config.email_from,
                        config.smtp_timeout,
                    )?))
                }
                #[cfg(feature = "webhook")]
                "webhook" => {
                    let settings = crate::notify::WebhookSettings {
                        timeout: config.webhook_timeout,
                        allow_private: config.webhook_allow_private,
                        disable_after: config.webhook_disable_after,
                        alert_channels: config.notifiers.iter().filter(|c| *c != "webhook").cloned().collect(),
                    };
                    Ok(Arc::new(crate::notify::WebhookNotifier::new(Arc::clone(storage), settings, Arc::clone(clock))?))
                }
                #[cfg(not(feature = "smtp"))]
                "smtp" => Err(Error::invalid("SOM_NOTIFIER", "this build has no SMTP support (cargo feature `smtp`)")),
                #[cfg(not(feature = "webhook"))]
                "webhook" => {
                    Err(Error::invalid("SOM_NOTIFIER", "this build has no webhook support (cargo feature `webhook`)"))
                }
                other => Err(Error::invalid(
                    "SOM_NOTIFIER",
                    format!("unknown notification channel {other:?}; available: log, smtp, webhook"),
                )),
            }
        })
        .collect::<Result<_>>()?;
    if let Some(url) = &config.event_stream {
        #[cfg(any(feature = "nats", feature = "amqp"))]
        {
            // A re-publish can come as late as the longest retry delay plus a lease (a crash).
            let window = config.outbox.backoff_cap.saturating_add(config.outbox.lease).max(Duration::from_secs(120));
            notifiers.push(Arc::new(crate::notify::StreamNotifier::new(url, &config.event_stream_name, window)?));
        }
        #[cfg(not(any(feature = "nats", feature = "amqp")))]
        return Err(Error::invalid(
            "SOM_EVENT_STREAM",
            format!(
                "this build has no event stream support (cargo features `nats`, `amqp`) for {}",
                crate::util::redact_url(url.expose())
            ),
        ));
    }
    Ok(notifiers)
}
