//! Secrets never surface: which names hold credentials, and URLs with every
//! credential-bearing part masked, for messages, logs, `config show` and the journal.

/// Whether a setting, option or query parameter of this name holds a credential: a password,
/// token, secret, key or signature (`sslpassword`, `aws_secret_access_key`, `X-Amz-Signature`,
/// `SLUICE_TOKEN`…). Names of non-secret siblings (`sslmode`, `sslrootcert`, `region`) do not.
pub fn is_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let named = [
        "pass",
        "secret",
        "token",
        "key",
        "signature",
        "credential",
        "auth",
    ]
    .iter()
    .any(|s| n.contains(s));
    // Switches and identifiers beside secrets: not secrets themselves.
    let exempt = matches!(n.as_str(), "sslmode" | "sslrootcert" | "sslcert" | "sslcrl")
        || n.ends_with("skip_signature")
        || n.ends_with("kms_key_id");
    named && !exempt
}

/// `url` with its password (`user:***@`) and the values of its credential-bearing query
/// parameters (`?sslpassword=***`) masked; everything else as it was.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match (head.find("://"), head.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &head[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &head[..s + 3], &creds[..c], &head[at..]),
                None => head.to_string(),
            }
        }
        _ => head.to_string(),
    };
    if let Some(q) = query {
        let (q, fragment) = match q.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (q, None),
        };
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_in_a_url_is_masked() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("sqlite://./x.db", "sqlite://./x.db"),
            ("postgres://u:p@ss:w@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=hunter2&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
            (
                "postgresql://h/db?sslmode=verify-full&sslpassword=kp&sslkey=/k.pem&sslrootcert=/ca.pem",
                "postgresql://h/db?sslmode=verify-full&sslpassword=***&sslkey=***&sslrootcert=/ca.pem",
            ),
            (
                "postgres://u:pw@h/db?user=u&passfile=/p#frag",
                "postgres://u:***@h/db?user=u&passfile=***#frag",
            ),
            (
                "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc&X-Amz-Security-Token=t&x=1",
                "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&x=1",
            ),
            (
                "s3://bucket/prefix?region=eu-west-1",
                "s3://bucket/prefix?region=eu-west-1",
            ),
            ("http://sluice.internal:8080", "http://sluice.internal:8080"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn credential_names_are_recognised() {
        for name in [
            "password",
            "SLUICE_TOKEN",
            "aws_secret_access_key",
            "aws_session_token",
            "sslkey",
            "client_secret",
            "account_key",
            "X-Amz-Signature",
        ] {
            assert!(is_secret_key(name), "{name}");
        }
        for name in [
            "sslmode",
            "sslrootcert",
            "region",
            "endpoint",
            "allow_http",
            "user",
            "aws_skip_signature",
            "aws_sse_kms_key_id",
        ] {
            assert!(!is_secret_key(name), "{name}");
        }
    }
}
