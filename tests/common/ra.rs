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

    /// The card `card` of `holder` an RA answer carries (its certificates written beside the keys
    /// that `csr_members` made for `name`), as an operator candidate.
    pub fn card_from(
        &self,
        answer: &serde_json::Value,
        name: &str,
        holder: &str,
        card: &str,
    ) -> Op {
        Op {
            name: name.to_owned(),
            key: self.pki.path(&format!("{name}-auth.key")),
            cert: self.save_certificate(answer, "authentication", &format!("{name}-auth.pem")),
            sign_key: self.pki.path(&format!("{name}-sign.key")),
            sign_cert: self.save_certificate(answer, "signature", &format!("{name}-sign.pem")),
            holder: holder.to_owned(),
            id: card.to_owned(),
        }
    }

    /// A new card (holder `operator-NAME`, card `card-NAME`) for a person named `given
    /// SURNAME` with the extra OUs `units`: a candidate operator.
    pub fn operator(&self, name: &str, given: &str, surname: &str, units: &[&str]) -> Op {
        let (holder, card) = (format!("operator-{name}"), format!("card-{name}"));
        self.card_of(name, &holder, &card, given, surname, units)
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
        let subject = person(units, given, surname);
        let (cert, sign_cert) = self.pki.issue_card(name, holder, card, &subject);
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
        self.run_docs_then(docs, "")
    }

    /// [`Ra::run_docs`], then `more` in the same shell (with the pages' functions and
    /// variables).
    pub fn run_docs_then(&self, docs: &[&str], more: &str) -> (String, std::process::Output) {
        let mut script: String = docs.iter().map(|doc| super::shell_blocks(doc)).collect();
        script.push_str(more);
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

    /// `GET /ra/v1/operators/me` as `op`: who the RA takes the client for.
    pub fn me(&self, op: &Op) -> (u16, serde_json::Value) {
        self.get(op, "/ra/v1/operators/me")
    }

    /// The certificate `which` ("authentication", "signature") of an RA answer that carries a
    /// card's certificates, written to the file `file` of the PKI's directory: its path.
    pub fn save_certificate(&self, answer: &serde_json::Value, which: &str, file: &str) -> PathBuf {
        let path = self.pki.path(file);
        std::fs::write(&path, answer[which]["certificate"].as_str().unwrap()).unwrap();
        path
    }

    /// `curl -s -o OUT -w %{http_code}` trusting the RA listener's certificate, with `op`'s
    /// authentication key and certificate as its TLS client credential (if any).
    pub fn curl_command(&self, op: Option<&Op>, out: &Path) -> Command {
        let mut command = Command::new("curl");
        command
            .args(["-s", "-o"])
            .arg(out)
            .args(["-w", "%{http_code}"]);
        command.arg("--cacert").arg(self.pki.path("ra-tls.pem"));
        if let Some(op) = op {
            command
                .arg("--cert")
                .arg(&op.cert)
                .arg("--key")
                .arg(&op.key);
        }
        command
    }

    pub fn curl(
        &self,
        op: &Op,
        method: &str,
        path: &str,
        body: Option<&Path>,
    ) -> (u16, serde_json::Value) {
        let out = self.pki.path(&format!("answer-{}.json", random_id()));
        let mut command = self.curl_command(Some(op), &out);
        command.args(["-X", method]);
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
    super::date("now")
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

/// The usual hierarchy, all in full scope: an AE (bootstrapped), an AEC, an AED and an OC.
pub struct Team {
    pub ae: Op,
    pub aec: Op,
    pub aed: Op,
    pub oc: Op,
}

pub fn team(ra: &Ra) -> Team {
    let [ae, aec, aed, oc] = chain(ra);
    Team { ae, aec, aed, oc }
}

/// The persons of the usual hierarchy, from the top: (files' name and role, given name,
/// surname).
pub const HIERARCHY: [(&str, &str, &str); 4] = [
    ("AE", "Alice", "AUBERT"),
    ("AEC", "Bruno", "CARON"),
    ("AED", "Chloe", "DURAND"),
    ("OC", "Eric", "GARNIER"),
];

/// The first `N` operators of the usual hierarchy (see `HIERARCHY`; files and cards named after
/// their role in lower case): the AE bootstrapped on the CA host, each of the others designated
/// in full scope by the one above it.
pub fn chain<const N: usize>(ra: &Ra) -> [Op; N] {
    let all = scope(&[], BOTH);
    let mut made: Vec<Op> = Vec::new();
    for (role, given, surname) in &HIERARCHY[..N] {
        let name = role.to_lowercase();
        match made.last() {
            None => {
                let ae = ra.operator(&name, given, surname, &[]);
                ra.pki.sceau_ok(&["ra", "bootstrap", "--card", &ae.id]);
                made.push(ae);
            }
            Some(above) => {
                let person = (name.as_str(), *given, *surname, &[][..]);
                made.push(designated(ra, above, role, &all, person));
            }
        }
    }
    made.try_into().unwrap_or_else(|_| unreachable!())
}

/// A new card for the person `(name, given, surname, units)` (see `Ra::operator`), designated
/// `role` in `scope` by `designator`, which must succeed (201).
pub fn designated(
    ra: &Ra,
    designator: &Op,
    role: &str,
    scope: &str,
    (name, given, surname, units): (&str, &str, &str, &[&str]),
) -> Op {
    let designee = ra.operator(name, given, surname, units);
    let answer = designate(ra, designator, &designee, role, scope);
    assert_eq!(answer.0, 201, "{role} {name}: {answer:?}");
    designee
}

/// Designates `designee` by `designator`; returns the answer.
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
    let surname = holder.to_uppercase().replace('-', "");
    submit_doc_for(ra, holder, &person(units, "Agent", &surname))
}

/// The subject of a person named `given SURNAME` with the extra OUs `units` (what follows the
/// organisation's name).
pub fn person(units: &[&str], given: &str, surname: &str) -> String {
    let extra: String = units.iter().map(|u| format!("/OU={u}")).collect();
    format!("{extra}/GN={given}/SN={surname}/CN={given} {surname}")
}

/// The signed document of a card request for `holder` whose certificates name `subject`,
/// the keys in files named after the holder: (request id, JSON).
pub fn submit_doc_for(ra: &Ra, holder: &str, subject: &str) -> (String, String) {
    let csrs = csr_members(ra, holder, subject);
    doc("submit", &format!(r#""holder":"{holder}",{csrs}"#))
}

/// Two new P-256 keys (NAME-auth.key, NAME-sign.key) and their CSRs for `subject`: the members
/// `"authentication_csr":...,"signature_csr":...` of a signed document.
pub fn csr_members(ra: &Ra, name: &str, subject: &str) -> String {
    let csr = |which: &str| {
        let path = ra
            .pki
            .csr(&format!("{name}-{which}"), super::KeyKind::P256, subject);
        json_string(&std::fs::read_to_string(path).unwrap())
    };
    format!(
        r#""authentication_csr":{},"signature_csr":{}"#,
        csr("auth"),
        csr("sign")
    )
}

/// Submits a card request for `holder` and has it approved: the approval's answer (the card and
/// its certificates).
pub fn approved(
    ra: &Ra,
    (submitter, approver): (&Op, &Op),
    holder: &str,
    units: &[&str],
) -> serde_json::Value {
    let (request, answer) = submit(ra, submitter, holder, units);
    assert_eq!(answer.0, 201, "{answer:?}");
    let (status, issued) = decide(ra, approver, &request, "approve");
    assert_eq!(status, 200, "{issued}");
    issued
}

pub fn decide(ra: &Ra, op: &Op, request: &str, action: &str) -> (u16, serde_json::Value) {
    decide_signed(ra, op, (&op.sign_cert, &op.sign_key), request, action)
}

/// The decision `action` on `request`, sent by `client` and signed with the certificate and key
/// `signer`.
pub fn decide_signed(
    ra: &Ra,
    client: &Op,
    signer: (&Path, &Path),
    request: &str,
    action: &str,
) -> (u16, serde_json::Value) {
    let fields = if action == "reject" {
        format!(r#""request":"{request}","reason":"documents incomplete""#)
    } else {
        format!(r#""request":"{request}""#)
    };
    let (_, json) = doc(action, &fields);
    let path = format!("/ra/v1/requests/{request}/{action}");
    ra.post_signed(client, signer, &path, &json)
}

/// The withdrawal of the operator `id` by `by` (with `reason`, if any).
pub fn withdraw(ra: &Ra, by: &Op, id: &str, reason: Option<&str>) -> (u16, serde_json::Value) {
    let reason = reason.map(|r| format!(r#","reason":"{r}""#));
    let fields = format!(r#""operator":"{id}"{}"#, reason.unwrap_or_default());
    let (_, json) = doc("withdraw", &fields);
    ra.post(by, &format!("/ra/v1/operators/{id}/withdraw"), &json)
}

pub fn revoke_card(ra: &Ra, op: &Op, card: &str) -> (u16, serde_json::Value) {
    let fields = format!(r#""card":"{card}","reason":"affiliation-changed""#);
    revoke_with(ra, op, &fields).1
}

/// A revocation (or a scheduled one) of the members `fields`, signed by `op`: (its id, the
/// answer).
pub fn revoke_with(ra: &Ra, op: &Op, fields: &str) -> (String, (u16, serde_json::Value)) {
    let (id, json) = doc("revoke", fields);
    (id, ra.post(op, "/ra/v1/revocations", &json))
}

/// The `detail` of a problem answer ("" without one).
pub fn detail(answer: &(u16, serde_json::Value)) -> &str {
    answer.1["detail"].as_str().unwrap_or_default()
}

/// How many entries the list `key` of an answer has (`None` if it is no list).
pub fn list_len(answer: &(u16, serde_json::Value), key: &str) -> Option<usize> {
    answer.1[key].as_array().map(Vec::len)
}

/// `second`, another card of the person who holds the operator card `own` (role `own_role`):
/// designating it is refused to that person (403 own-certificate) and to `other` (409
/// person-already-operator), both in full scope.
pub fn assert_one_person(
    ra: &Ra,
    (own, own_role): (&Op, &str),
    (other, role): (&Op, &str),
    second: &Op,
) {
    let all = scope(&[], BOTH);
    let answer = designate(ra, own, second, own_role, &all);
    assert_refused(&answer, 403, "own-certificate");
    let answer = designate(ra, other, second, role, &all);
    assert_refused(&answer, 409, "person-already-operator");
}

/// A branch limited to the unit DAP below `aec`: an AED (Fanny HUET) and an OC (Gilles JOLY)
/// of the unit, in its scope.
pub fn dap_branch(ra: &Ra, aec: &Op) -> [Op; 2] {
    let dap = scope(&["DAP"], BOTH);
    let aed = designated(ra, aec, "AED", &dap, ("aeddap", "Fanny", "HUET", &["DAP"]));
    let oc = designated(ra, &aed, "OC", &dap, ("ocdap", "Gilles", "JOLY", &["DAP"]));
    [aed, oc]
}

/// Every audit event of the store, as JSON (`sceau audit export`, beside the daemon or not).
pub fn audit_events(pki: &Pki) -> Vec<serde_json::Value> {
    pki.sceau_ok(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many of `events` are of the kind `event`.
pub fn count(events: &[serde_json::Value], event: &str) -> usize {
    events.iter().filter(|e| e["event"] == event).count()
}

/// A renewal request for `card` with new keys for `subject`, signed by `op`.
pub fn renew(
    ra: &Ra,
    op: &Op,
    card: &str,
    name: &str,
    subject: &str,
) -> (String, (u16, serde_json::Value)) {
    let csrs = csr_members(ra, name, subject);
    let (id, json) = doc("renew", &format!(r#""card":"{card}",{csrs}"#));
    let answer = ra.post(op, &format!("/ra/v1/cards/{card}/renew"), &json);
    (id, answer)
}

/// The card `card-NAME` of the holder `agent-NAME` for `given SURNAME`, asked for by `submitter`
/// and approved by `approver`, as an operator candidate.
pub fn card_through_ra(
    ra: &Ra,
    (submitter, approver): (&Op, &Op),
    name: &str,
    (given, surname): (&str, &str),
) -> Op {
    let (holder, card) = (format!("agent-{name}"), format!("card-{name}"));
    let csrs = csr_members(ra, name, &person(&[], given, surname));
    let fields = format!(r#""holder":"{holder}","card":"{card}",{csrs}"#);
    let (request, json) = doc("submit", &fields);
    let answer = ra.post(submitter, "/ra/v1/requests", &json);
    assert_eq!(answer.0, 201, "{answer:?}");
    let (status, issued) = decide(ra, approver, &request, "approve");
    assert_eq!(status, 200, "{issued}");
    ra.card_from(&issued, name, &holder, &card)
}

/// The number of audit entries, read beside the running daemon.
pub fn audit_events_live(ra: &Ra) -> usize {
    ra.pki.sceau_ok(&["audit", "export"]).lines().count()
}
