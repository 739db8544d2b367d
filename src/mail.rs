//! Outgoing mail behind one [`Mailer`] interface: [`SmtpMailer`] (lettre, plain SMTP to a
//! relay) or, by default, [`OutboxMailer`], which writes each message as an `.eml` file so that
//! invitations and password resets work on a machine without a mail server (and tests read
//! them).

use std::path::PathBuf;

use futures::future::BoxFuture;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Config;

/// One message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Sends mail.
pub trait Mailer: Send + Sync {
    /// Sends (or stores) one message.
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), String>>;
}

/// The base URL links in mails point at: `mail.public_url`, or this node's advertised API
/// address.
pub fn public_url(config: &Config) -> String {
    config.mail.public_url.clone().unwrap_or_else(|| format!("http://{}", config.advertised_api_addr()))
}

/// Builds the mailer a node's configuration asks for.
pub fn from_config(config: &Config) -> Result<Box<dyn Mailer>, String> {
    let from: Mailbox = config.mail.from.parse().map_err(|e| format!("mail.from: {e}"))?;
    match &config.mail.smtp_url {
        Some(url) => {
            let rest = url.strip_prefix("smtp://").ok_or("mail.smtp_url: expected smtp://host[:port]")?;
            let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "mail.smtp_url: bad port")?),
                None => (rest.trim_end_matches('/'), 25),
            };
            let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port).build();
            Ok(Box::new(SmtpMailer { transport, from }))
        }
        None => {
            let dir = config.mail.outbox_dir.clone().unwrap_or_else(|| config.data_dir.join("outbox"));
            Ok(Box::new(OutboxMailer { dir, from }))
        }
    }
}

fn message(from: &Mailbox, mail: &Mail) -> Result<Message, String> {
    let to: Mailbox = mail.to.parse().map_err(|e| format!("recipient {}: {e}", mail.to))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .body(mail.body.clone())
        .map_err(|e| e.to_string())
}

/// Relays through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let msg = message(&self.from, &mail)?;
            self.transport.send(msg).await.map(|_| ()).map_err(|e| e.to_string())
        })
    }
}

/// Writes each message to `<dir>/<unix ms>-<uuid>.eml`.
pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl Mailer for OutboxMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let msg = message(&self.from, &mail)?;
            tokio::fs::create_dir_all(&self.dir).await.map_err(|e| e.to_string())?;
            let name = format!("{}-{}.eml", crate::clock::now_ms(), uuid::Uuid::new_v4().simple());
            let tmp = self.dir.join(format!(".{name}.tmp"));
            tokio::fs::write(&tmp, msg.formatted()).await.map_err(|e| e.to_string())?;
            tokio::fs::rename(&tmp, self.dir.join(&name)).await.map_err(|e| e.to_string())
        })
    }
}
