//! Looking into one container: `top` (its processes through the host's
//! `ps`, as dockerd does) and `diff` (its writable layer's changes).

use berth_core::Core;
use hyper::Response;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::http::{ok_json, Body, Query};
use crate::view;

/// `GET /containers/{id}/top?ps_args=`.
pub fn top(core: &Core, reference: &str, query: &Query) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    let pids = core
        .containers()
        .pids(&v.record.id)
        .map_err(|e| match e.kind {
            berth_core::ErrorKind::Conflict => {
                ApiError::conflict(format!("Container {} is not running", v.record.id))
            }
            _ => e.into(),
        })?;
    let args = match query.get("ps_args") {
        None | Some("") => "-ef",
        Some(a) => a,
    };
    let output = std::process::Command::new("ps")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| ApiError::internal(format!("error running ps: {e}")))?;
    if !output.status.success() {
        return Err(ApiError::internal(format!(
            "ps: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    ok_json(&ps_table(&String::from_utf8_lossy(&output.stdout), &pids)?)
}

/// dockerd's parsing of `ps` output: the titles, then the lines whose
/// PID column is one of `pids`, the last column keeping its spaces.
fn ps_table(text: &str, pids: &[u32]) -> ApiResult<Value> {
    let mut lines = text.lines();
    let titles: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or_else(|| ApiError::internal("Couldn't find PID field in ps output"))?;
    let mut processes = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = fields.get(pid_col).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let last = titles.len().saturating_sub(1).min(fields.len());
        let mut row: Vec<String> = fields[..last].iter().map(|s| s.to_string()).collect();
        row.push(fields[last..].join(" "));
        processes.push(row);
    }
    Ok(json!({ "Processes": processes, "Titles": titles }))
}

/// `GET /containers/{id}/changes`.
pub fn changes(core: &Core, reference: &str) -> ApiResult<Response<Body>> {
    let v = view::find(core, reference)?;
    let changes: Vec<Value> = core
        .containers()
        .changes(&v.record.id)?
        .into_iter()
        .map(|c| json!({ "Path": c.path, "Kind": c.kind as u8 }))
        .collect();
    ok_json(&changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_lines_are_filtered_by_pid_and_keep_the_command_whole() {
        let text = "UID PID PPID C STIME TTY TIME CMD\n\
                    root 1 0 0 10:00 ? 00:00:01 /sbin/init splash\n\
                    root 42 1 0 10:01 ? 00:00:00 sleep 1d\n";
        let t = ps_table(text, &[42]).unwrap();
        assert_eq!(t["Titles"][1], "PID");
        assert_eq!(t["Processes"].as_array().unwrap().len(), 1);
        assert_eq!(t["Processes"][0][7], "sleep 1d");
        assert!(ps_table("UID CMD\n", &[1]).is_err());
    }
}
