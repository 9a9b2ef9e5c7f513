//! `berth_build_info{version,commit,rustc} 1`: which berthd this is. The
//! commit and compiler come from `build.rs` ("unknown" when not found).

use prometheus::{IntGaugeVec, Opts, Registry};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("BERTH_COMMIT");
pub const RUSTC: &str = env!("BERTH_RUSTC");

pub fn register(registry: &Registry) -> Result<(), prometheus::Error> {
    let info = IntGaugeVec::new(
        Opts::new(
            "berth_build_info",
            "Always 1; its labels say which berthd is running.",
        ),
        &["version", "commit", "rustc"],
    )?;
    info.with_label_values(&[VERSION, COMMIT, RUSTC]).set(1);
    registry.register(Box::new(info))
}
