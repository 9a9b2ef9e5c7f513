//! `process_*` for berthd itself (resident memory, CPU seconds, open and
//! maximum descriptors, start time, threads): the client library's
//! collector, which reads `/proc/self` when scraped.

use prometheus::process_collector::ProcessCollector;
use prometheus::Registry;

pub fn register(registry: &Registry) -> Result<(), prometheus::Error> {
    registry.register(Box::new(ProcessCollector::for_self()))
}
