//! Image names as the docker CLI shows them: Docker Hub's registry and
//! `library/` left out (`docker.io/library/busybox:latest` is
//! `busybox:latest`), every other name whole.

/// The familiar form of a fully qualified name.
pub fn familiar(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("docker.io/") {
        return rest.strip_prefix("library/").unwrap_or(rest).to_string();
    }
    name.to_string()
}

/// A repository's path within its registry (`127.0.0.1:5001/anchor/app`
/// → `anchor/app`), as "Pulling from" names it.
pub fn path_of(repository: &str) -> &str {
    repository.split_once('/').map_or(repository, |(_, p)| p)
}

/// Go's `path.Match` for the `*` and `?` wildcards of a reference filter
/// (neither crosses a `/`).
pub fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                go(&p[1..], t) || (t.first().is_some_and(|c| *c != b'/') && go(p, &t[1..]))
            }
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_are_shortened_and_others_kept() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(familiar("127.0.0.1:5000/a:1"), "127.0.0.1:5000/a:1");
        assert_eq!(path_of("docker.io/library/busybox"), "library/busybox");
        assert!(glob("busy*", "busybox"));
        assert!(glob("127.0.0.1:5000/*:v?", "127.0.0.1:5000/app:v1"));
        assert!(!glob("*", "a/b"));
    }
}
