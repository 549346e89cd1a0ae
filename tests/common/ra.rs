//! The registration authority under test: a daemon with its RA listener, operators holding
//! cards, requests signed by `openssl cms` and sent by `curl` over mutual TLS.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::daemon::Daemon;
use super::{Keys, Pki, openssl};

/// An operator: a person holding a card of the test CA (its two keys and certificates), whose
/// operator id is the card's id.
#[derive(Clone)]
pub struct Op {
    pub name: String,
    /// The authentication key and certificate: the TLS client credential.
    pub key: PathBuf,
    pub cert: PathBuf,
    /// The signature key and certificate: what signs requests.
    pub sign_key: PathBuf,
    pub sign_cert: PathBuf,
    pub holder: String,
    /// The card's id, which is the operator's id.
    pub id: String,
}

/// An RA under test: the PKI, its daemon, the operators made so far.
pub struct Ra {
    pub pki: Pki,
    pub daemon: Daemon,
}

impl Ra {
    pub fn start() -> Self {
        Self::start_with_limit(100_000)
    }

    /// With a rate limit of `per_minute` requests (and bursts) per client certificate.
    pub fn start_with_limit(per_minute: u32) -> Self {
        let pki = Pki::new(Keys::EC);
        pki.enable_ra(per_minute);
        pki.init();
        let daemon = Daemon::start(&pki);
        assert!(daemon.ra.is_some(), "the RA listener did not start");
        Ra { pki, daemon }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.daemon.ra.unwrap())
    }

    /// A new card (holder `operator-NAME`, card `card-NAME`) for a person named `given
    /// SURNAME` with the extra OUs `units`: a candidate operator.
    pub fn operator(&self, name: &str, given: &str, surname: &str, units: &[&str]) -> Op {
        self.card_of(
            name,
            &format!("operator-{name}"),
            &format!("card-{name}"),
            given,
            surname,
            units,
        )
    }

    /// A new card `card` of `holder` for a person named `given SURNAME` (extra OUs `units`),
    /// its files named after `name`.
    pub fn card_of(
        &self,
        name: &str,
        holder: &str,
        card: &str,
        given: &str,
        surname: &str,
        units: &[&str],
    ) -> Op {
        let extra: String = units.iter().map(|u| format!("/OU={u}")).collect();
        let (cert, sign_cert) = self.pki.issue_card(
            name,
            holder,
            card,
            &format!("{extra}/GN={given}/SN={surname}/CN={given} {surname}"),
        );
        Op {
            name: name.to_owned(),
            key: self.pki.path(&format!("{name}.key")),
            cert,
            sign_key: self.pki.path(&format!("{name}-sig.key")),
            sign_cert,
            holder: holder.to_owned(),
            id: card.to_owned(),
        }
    }

    /// Signs `json` with `signer`'s signature key and POSTs it over TLS as `client`.
    pub fn post_as(
        &self,
        client: &Op,
        signer: &Op,
        path: &str,
        json: &str,
    ) -> (u16, serde_json::Value) {
        self.post_signed(client, (&signer.sign_cert, &signer.sign_key), path, json)
    }

    /// Signs `json` with the certificate and key `signer` and POSTs it over TLS as `client`:
    /// (status, body).
    pub fn post_signed(
        &self,
        client: &Op,
        signer: (&Path, &Path),
        path: &str,
        json: &str,
    ) -> (u16, serde_json::Value) {
        let cms = self.sign_with(signer, json);
        self.curl(client, "POST", path, Some(&cms))
    }

    /// `json` signed by `op`'s signature key: the file of the CMS bytes.
    pub fn sign(&self, op: &Op, json: &str) -> PathBuf {
        self.sign_with((&op.sign_cert, &op.sign_key), json)
    }

    /// `json` signed with the certificate and key `signer` (`openssl cms`).
    pub fn sign_with(&self, signer: (&Path, &Path), json: &str) -> PathBuf {
        let unique = random_id();
        let content = self.pki.path(&format!("req-{unique}.json"));
        let cms = self.pki.path(&format!("req-{unique}.cms"));
        std::fs::write(&content, json).unwrap();
        let (ok, text) = openssl(&[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-outform",
            "DER",
            "-signer",
            signer.0.to_str().unwrap(),
            "-inkey",
            signer.1.to_str().unwrap(),
            "-in",
            content.to_str().unwrap(),
            "-out",
            cms.to_str().unwrap(),
        ]);
        assert!(ok, "openssl cms: {text}");
        cms
    }

    /// Runs the ```sh blocks of the pages `docs`, in order, as one bash script in the PKI's
    /// directory, against this daemon: (the script, its output).
    pub fn run_docs(&self, docs: &[&str]) -> (String, std::process::Output) {
        let mut script = String::new();
        for doc in docs {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
            let text = std::fs::read_to_string(&path).unwrap();
            let mut inside = false;
            for line in text.lines() {
                match (inside, line.trim_start()) {
                    (false, "```sh") => inside = true,
                    (true, "```") => inside = false,
                    (true, _) => {
                        script.push_str(line);
                        script.push('\n');
                    }
                    _ => {}
                }
            }
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(self.pki.dir.path())
            .env("SCEAU_BIN", env!("CARGO_BIN_EXE_sceau"))
            .env("SCEAU_CONFIG", &self.pki.config)
            .env("RA", self.url(""))
            .env("RA_CA", self.pki.path("ra-tls.pem"))
            .env("VA", self.daemon.url(""))
            .env("CERTS", self.pki.data_dir().join("certs"))
            .output()
            .unwrap();
        (script, out)
    }

    /// POSTs the signed bytes in `cms` over TLS as `client`.
    pub fn post_cms(&self, client: &Op, path: &str, cms: &Path) -> (u16, serde_json::Value) {
        self.curl(client, "POST", path, Some(cms))
    }

    pub fn post(&self, op: &Op, path: &str, json: &str) -> (u16, serde_json::Value) {
        self.post_as(op, op, path, json)
    }

    pub fn get(&self, op: &Op, path: &str) -> (u16, serde_json::Value) {
        self.curl(op, "GET", path, None)
    }

    pub fn curl(
        &self,
        op: &Op,
        method: &str,
        path: &str,
        body: Option<&Path>,
    ) -> (u16, serde_json::Value) {
        let out = self.pki.path(&format!("answer-{}.json", random_id()));
        let mut command = Command::new("curl");
        command
            .args(["-s", "-o"])
            .arg(&out)
            .args(["-w", "%{http_code}", "-X", method, "--cacert"])
            .arg(self.pki.path("ra-tls.pem"))
            .arg("--cert")
            .arg(&op.cert)
            .arg("--key")
            .arg(&op.key);
        if let Some(body) = body {
            command
                .args(["-H", "Content-Type: application/cms", "--data-binary"])
                .arg(format!("@{}", body.display()));
        }
        let output = command.arg(self.url(path)).output().unwrap();
        let status: u16 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }
}

pub fn random_id() -> String {
    let (ok, text) = openssl(&["rand", "-hex", "16"]);
    assert!(ok);
    text.trim().to_owned()
}

pub fn now_rfc3339() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A signed document: id, time, action and the other fields (a JSON object's members).
pub fn doc(action: &str, fields: &str) -> (String, String) {
    let id = random_id();
    let time = now_rfc3339();
    let json = if fields.is_empty() {
        format!(r#"{{"id":"{id}","time":"{time}","action":"{action}"}}"#)
    } else {
        format!(r#"{{"id":"{id}","time":"{time}","action":"{action}",{fields}}}"#)
    };
    (id, json)
}

pub fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

pub const ORG_SCOPE: &str = r#""organizations":["MINISTERE DE LA JUSTICE TEST"]"#;
pub const BOTH: &str = r#""policies":["justice-auth","justice-sign"]"#;

pub fn scope(units: &[&str], policies: &str) -> String {
    let units: Vec<String> = units.iter().map(|u| json_string(u)).collect();
    format!(
        r#""scope":{{{ORG_SCOPE},"units":[{}],{policies}}}"#,
        units.join(",")
    )
}

thread_local! {
    /// Refusals checked by this test thread (each must have left one audit event).
    pub static REFUSALS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Checks a refusal: the status, the problem type naming `rule`.
#[track_caller]
pub fn assert_refused(answer: &(u16, serde_json::Value), status: u16, rule: &str) {
    REFUSALS.with(|n| n.set(n.get() + 1));
    assert_eq!(answer.0, status, "expected {status} {rule}, got {answer:?}");
    let kind = answer.1["type"].as_str().unwrap_or_default();
    assert!(
        kind.starts_with(&format!("urn:sceau:problem:{rule}")),
        "expected rule {rule}, got {answer:?}"
    );
}

/// Designates `designee` by `designator`; returns the answer.
/// The usual hierarchy, all in full scope: an AE (bootstrapped), an AEC, an AED and an OC.
pub struct Team {
    pub ae: Op,
    pub aec: Op,
    pub aed: Op,
    pub oc: Op,
}

pub fn team(ra: &Ra) -> Team {
    let ae = ra.operator("ae", "Alice", "AUBERT", &[]);
    let aec = ra.operator("aec", "Bruno", "CARON", &[]);
    let aed = ra.operator("aed", "Chloe", "DURAND", &[]);
    let oc = ra.operator("oc", "Eric", "GARNIER", &[]);
    ra.pki.sceau_ok(&["ra", "bootstrap", "--card", &ae.id]);
    let all = scope(&[], BOTH);
    assert_eq!(designate(ra, &ae, &aec, "AEC", &all).0, 201);
    assert_eq!(designate(ra, &aec, &aed, "AED", &all).0, 201);
    assert_eq!(designate(ra, &aed, &oc, "OC", &all).0, 201);
    Team { ae, aec, aed, oc }
}

pub fn designate(
    ra: &Ra,
    designator: &Op,
    designee: &Op,
    role: &str,
    scope: &str,
) -> (u16, serde_json::Value) {
    let (_, json) = doc(
        "designate",
        &format!(
            r#""role":"{role}",{scope},"holder":"{}","card":"{}""#,
            designee.holder, designee.id
        ),
    );
    ra.post(designator, "/ra/v1/operators", &json)
}

/// Submits a card request for a new holder; returns (request id, answer).
pub fn submit(
    ra: &Ra,
    op: &Op,
    holder: &str,
    units: &[&str],
) -> (String, (u16, serde_json::Value)) {
    let (id, json) = submit_doc(ra, holder, units);
    let answer = ra.post(op, "/ra/v1/requests", &json);
    (id, answer)
}

/// The signed document of a card request for a new holder `holder` (named "Agent HOLDER", extra
/// OUs `units`): (request id, JSON).
pub fn submit_doc(ra: &Ra, holder: &str, units: &[&str]) -> (String, String) {
    let extra: String = units.iter().map(|u| format!("/OU={u}")).collect();
    let given = "Agent";
    let surname = holder.to_uppercase().replace('-', "");
    let subject = format!("{extra}/GN={given}/SN={surname}/CN={given} {surname}");
    let auth = ra
        .pki
        .csr(&format!("{holder}-auth"), super::KeyKind::P256, &subject);
    let sign = ra
        .pki
        .csr(&format!("{holder}-sign"), super::KeyKind::P256, &subject);
    doc(
        "submit",
        &format!(
            r#""holder":"{holder}","authentication_csr":{},"signature_csr":{}"#,
            json_string(&std::fs::read_to_string(auth).unwrap()),
            json_string(&std::fs::read_to_string(sign).unwrap())
        ),
    )
}

pub fn decide(ra: &Ra, op: &Op, request: &str, action: &str) -> (u16, serde_json::Value) {
    let fields = if action == "reject" {
        format!(r#""request":"{request}","reason":"documents incomplete""#)
    } else {
        format!(r#""request":"{request}""#)
    };
    let (_, json) = doc(action, &fields);
    ra.post(op, &format!("/ra/v1/requests/{request}/{action}"), &json)
}

pub fn revoke_card(ra: &Ra, op: &Op, card: &str) -> (u16, serde_json::Value) {
    let (_, json) = doc(
        "revoke",
        &format!(r#""card":"{card}","reason":"affiliation-changed""#),
    );
    ra.post(op, "/ra/v1/revocations", &json)
}

/// Every audit event of the store, as JSON (the daemon must be stopped).
pub fn audit_events(pki: &Pki) -> Vec<serde_json::Value> {
    pki.sceau_ok(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A renewal request for `card` with new keys for `subject`, signed by `op`.
pub fn renew(
    ra: &Ra,
    op: &Op,
    card: &str,
    name: &str,
    subject: &str,
) -> (String, (u16, serde_json::Value)) {
    let auth = ra
        .pki
        .csr(&format!("{name}-auth"), super::KeyKind::P256, subject);
    let sign = ra
        .pki
        .csr(&format!("{name}-sign"), super::KeyKind::P256, subject);
    let (id, json) = doc(
        "renew",
        &format!(
            r#""card":"{card}","authentication_csr":{},"signature_csr":{}"#,
            json_string(&std::fs::read_to_string(auth).unwrap()),
            json_string(&std::fs::read_to_string(sign).unwrap())
        ),
    );
    let answer = ra.post(op, &format!("/ra/v1/cards/{card}/renew"), &json);
    (id, answer)
}

/// The card of `holder` with the id `card` for `given SURNAME` (extra OUs `units`), asked for by
/// `submitter` and approved by `approver`, as an operator candidate.
pub fn card_through_ra(
    ra: &Ra,
    (submitter, approver): (&Op, &Op),
    name: &str,
    (holder, card): (&str, &str),
    (given, surname): (&str, &str),
) -> Op {
    let subject = format!("/GN={given}/SN={surname}/CN={given} {surname}");
    let auth = ra.pki.csr(name, super::KeyKind::P256, &subject);
    let sign = ra
        .pki
        .csr(&format!("{name}-sig"), super::KeyKind::P256, &subject);
    let (request, json) = doc(
        "submit",
        &format!(
            r#""holder":"{holder}","card":"{card}","authentication_csr":{},"signature_csr":{}"#,
            json_string(&std::fs::read_to_string(auth).unwrap()),
            json_string(&std::fs::read_to_string(sign).unwrap())
        ),
    );
    let answer = ra.post(submitter, "/ra/v1/requests", &json);
    assert_eq!(answer.0, 201, "{answer:?}");
    let (status, issued) = decide(ra, approver, &request, "approve");
    assert_eq!(status, 200, "{issued}");
    let write = |file: String, which: &str| {
        let path = ra.pki.path(&file);
        std::fs::write(&path, issued[which]["certificate"].as_str().unwrap()).unwrap();
        path
    };
    Op {
        name: name.to_owned(),
        key: ra.pki.path(&format!("{name}.key")),
        cert: write(format!("{name}.pem"), "authentication"),
        sign_key: ra.pki.path(&format!("{name}-sig.key")),
        sign_cert: write(format!("{name}-sig.pem"), "signature"),
        holder: holder.to_owned(),
        id: card.to_owned(),
    }
}

/// The number of audit entries, read beside the running daemon.
pub fn audit_events_live(ra: &Ra) -> usize {
    ra.pki.sceau_ok(&["audit", "export"]).lines().count()
}
