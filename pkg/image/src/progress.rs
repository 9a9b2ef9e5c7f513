//! What a pull reports while it runs: the states a Docker client renders
//! per layer, with the bytes really read from the registry.
//!
//! Delivery: state changes are sent with back-pressure (a caller that asks
//! for progress must keep reading, or the pull waits for it); byte counts
//! are sent at most every [`BYTES_EVERY`] and dropped when the channel is
//! full, since the next count supersedes them. A closed receiver only
//! stops the reports, never the pull.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::manifest::digest_hex;

/// How often, at most, a layer's byte count is reported while it downloads.
pub const BYTES_EVERY: Duration = Duration::from_millis(100);

/// One report of a pull in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullProgress {
    /// A pull from one registry endpoint begins ("<tag>: Pulling from <repository>").
    Started {
        /// `registry/repository`, e.g. `docker.io/library/busybox`.
        repository: String,
        /// The tag, or the digest when the reference has no tag.
        tag: String,
    },
    /// A layer changed state.
    Layer { id: String, state: LayerState },
    /// The pull ended well ("Digest: …", then "Status: …").
    Finished {
        /// `registry/repository:tag` or `registry/repository@digest`, as pulled.
        reference: String,
        /// The digest the registry served for the reference.
        digest: String,
        /// `true` for "Downloaded newer image", `false` for "Image is up to date".
        updated: bool,
    },
}

/// A layer's state, in the order a pull goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// Another pull is downloading the same layer; this one waits for it.
    Waiting,
    PullingFsLayer,
    /// Compressed bytes read from the registry so far, of `total`.
    Downloading {
        current: u64,
        total: u64,
    },
    VerifyingChecksum,
    DownloadComplete,
    /// Unpacking runs while the layer downloads; this marks its tail (the
    /// last chunks, the digests' checks and the commit).
    Extracting,
    PullComplete,
    /// The layer was on disk already: nothing downloaded.
    AlreadyExists,
}

impl LayerState {
    /// The status text Docker shows for the state.
    pub fn docker_status(&self) -> &'static str {
        match self {
            LayerState::Waiting => "Waiting",
            LayerState::PullingFsLayer => "Pulling fs layer",
            LayerState::Downloading { .. } => "Downloading",
            LayerState::VerifyingChecksum => "Verifying Checksum",
            LayerState::DownloadComplete => "Download complete",
            LayerState::Extracting => "Extracting",
            LayerState::PullComplete => "Pull complete",
            LayerState::AlreadyExists => "Already exists",
        }
    }
}

/// One report of a push in progress, in Docker's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushProgress {
    /// "The push refers to repository [<repository>]".
    Started { repository: String },
    /// A layer (named by its diff id's short form, as Docker does) changed state.
    Layer { id: String, state: PushLayerState },
    /// The manifest is in place: "<tag>: digest: <digest> size: <size>".
    Finished {
        tag: String,
        digest: String,
        size: u64,
    },
}

/// A layer's state during a push, in the order a push goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushLayerState {
    Preparing,
    /// Another layer of the push uploads the same blob first.
    Waiting,
    /// Bytes sent so far, of `total`.
    Pushing {
        current: u64,
        total: u64,
    },
    Pushed,
    /// The registry had the blob: nothing sent.
    AlreadyExists,
}

impl PushLayerState {
    /// The status text Docker shows for the state.
    pub fn docker_status(&self) -> &'static str {
        match self {
            PushLayerState::Preparing => "Preparing",
            PushLayerState::Waiting => "Waiting",
            PushLayerState::Pushing { .. } => "Pushing",
            PushLayerState::Pushed => "Pushed",
            PushLayerState::AlreadyExists => "Layer already exists",
        }
    }
}

/// A layer's short id as Docker shows it: 12 hex digits of its digest.
pub fn short_id(digest: &str) -> String {
    let hex = digest_hex(digest).unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// The sending side, cheap to clone; `None` reports nothing.
#[derive(Clone, Default)]
pub(crate) struct Reporter {
    tx: Option<mpsc::Sender<PullProgress>>,
}

impl Reporter {
    pub fn new(tx: Option<mpsc::Sender<PullProgress>>) -> Reporter {
        Reporter { tx }
    }

    pub async fn send(&self, p: PullProgress) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(p).await;
        }
    }

    pub async fn layer(&self, id: &str, state: LayerState) {
        if self.tx.is_some() {
            self.send(PullProgress::Layer {
                id: id.to_string(),
                state,
            })
            .await;
        }
    }

    /// A byte counter for one layer's download.
    pub fn bytes(&self, id: &str, total: u64) -> ByteCounter {
        ByteCounter {
            reporter: self.clone(),
            id: id.to_string(),
            total,
            current: 0,
            sent: 0,
            last: None,
        }
    }
}

/// Counts a layer's bytes as they arrive and reports them, throttled.
pub(crate) struct ByteCounter {
    reporter: Reporter,
    id: String,
    total: u64,
    current: u64,
    /// The count last reported.
    sent: u64,
    last: Option<Instant>,
}

impl ByteCounter {
    pub fn add(&mut self, n: u64) {
        self.current += n;
        let Some(tx) = &self.reporter.tx else {
            return;
        };
        let due = self.last.is_none_or(|t| t.elapsed() >= BYTES_EVERY);
        if due || self.current >= self.total {
            self.last = Some(Instant::now());
            let sent = tx.try_send(PullProgress::Layer {
                id: self.id.clone(),
                state: LayerState::Downloading {
                    current: self.current,
                    total: self.total,
                },
            });
            if sent.is_ok() {
                self.sent = self.current;
            }
        }
    }

    /// The last count, unless it went out already: sent even into a full
    /// channel (waits for room), so the final figure is never lost.
    pub async fn finish(&self) {
        if self.sent == self.current {
            return;
        }
        self.reporter
            .layer(
                &self.id,
                LayerState::Downloading {
                    current: self.current,
                    total: self.total,
                },
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_twelve_hex_digits() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short_id(&d), "abababababab");
    }

    #[tokio::test]
    async fn counts_are_throttled_but_the_last_is_sent() {
        let (tx, mut rx) = mpsc::channel(16);
        let r = Reporter::new(Some(tx));
        let mut c = r.bytes("l", 100);
        for _ in 0..9 {
            c.add(10); // within BYTES_EVERY of the first: only the first goes
        }
        c.finish().await;
        drop((c, r));
        let mut seen = Vec::new();
        while let Some(PullProgress::Layer {
            state: LayerState::Downloading { current, .. },
            ..
        }) = rx.recv().await
        {
            seen.push(current);
        }
        assert_eq!(seen, vec![10, 90]);
    }
}
