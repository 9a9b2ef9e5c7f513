//! systemd cgroup names: kubelet with the systemd driver gives parents as
//! slice names (`kubepods-burstable-pod12.slice`), which live at the path
//! made by expanding every dash-separated prefix into its own slice.

use berth_errdefs::{Error, Result};

/// `kubepods-burstable-pod12.slice` →
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice`;
/// `-.slice` (the root slice) → `/`.
pub fn systemd_slice_path(slice: &str) -> Result<String> {
    let name = slice
        .strip_suffix(".slice")
        .ok_or_else(|| Error::invalid(format!("{slice:?} is not a systemd slice name")))?;
    if name == "-" {
        return Ok("/".to_string());
    }
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(Error::invalid(format!(
            "{slice:?} is not a valid slice name"
        )));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_like_systemd() {
        assert_eq!(
            systemd_slice_path("kubepods-burstable-pod12.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice"
        );
        assert_eq!(
            systemd_slice_path("kubepods.slice").unwrap(),
            "/kubepods.slice"
        );
        assert_eq!(systemd_slice_path("-.slice").unwrap(), "/");
        for bad in ["kubepods", "a--b.slice", "-a.slice", "a/b.slice", ".slice"] {
            assert!(systemd_slice_path(bad).is_err(), "{bad}");
        }
    }
}
