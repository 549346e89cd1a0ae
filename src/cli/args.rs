//! The command line: what `sceau` accepts (clap declarations only; [`super::run`] carries
//! each command out).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// sceau: a certificate authority for smart-card PKIs, with its keys in an HSM.
#[derive(Debug, Parser)]
#[command(name = "sceau", version, about, max_term_width = 100)]
pub struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, env = "SCEAU_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Log filter, in RUST_LOG syntax (e.g. "info", "sceau=debug").
    #[arg(long, global = true, env = "SCEAU_LOG", default_value = "info")]
    pub log: String,
    /// Write logs as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: OCSP, CRLs and CA certificates on the validation listener; health,
    /// metrics and administration on the admin listener. Prints a ready line; SIGTERM drains.
    Serve {
        /// Validation listener address (overrides `[listen] va`).
        #[arg(long, value_name = "ADDR")]
        listen_va: Option<SocketAddr>,
        /// Registration authority listener address (overrides `[listen] ra`).
        #[arg(long, value_name = "ADDR")]
        listen_ra: Option<SocketAddr>,
        /// Administration listener address (overrides `[listen] admin`).
        #[arg(long, value_name = "ADDR")]
        listen_admin: Option<SocketAddr>,
    },
    /// Run a responder node: OCSP, CRLs and CA certificates from the NATS JetStream buckets the
    /// CA host publishes to. `--config` names the node's own file (listen, `[nats]`); no HSM, no
    /// store.
    Node,
    /// Revoke a certificate, or both certificates of a card. Goes through the running daemon,
    /// so OCSP answers "revoked" when this returns; with no daemon running, revokes in the store
    /// (the daemon re-signs the responses when it starts).
    Revoke {
        /// Serial number, hexadecimal.
        #[arg(
            long,
            value_name = "HEX",
            required_unless_present = "card",
            conflicts_with = "card"
        )]
        serial: Option<String>,
        /// A card's identifier: revokes both of its certificates.
        #[arg(long, value_name = "ID")]
        card: Option<String>,
        /// key-compromise (loss, theft), affiliation-changed (departure), superseded,
        /// cessation-of-operation, privilege-withdrawn, ca-compromise, unspecified. Required
        /// unless --at is given (a scheduled departure: affiliation-changed by default).
        #[arg(long, required_unless_present = "at")]
        reason: Option<String>,
        /// When the key was (suspected) compromised, RFC 3339.
        #[arg(long, value_name = "TIME", conflicts_with = "at")]
        invalidity_date: Option<String>,
        /// Revoke at this time (RFC 3339), not now: the planned departure of an agent. Until
        /// then OCSP says good; a time already past revokes now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Back up the store (a consistent copy, taken while the daemon serves), the CA
    /// certificates and the published CRLs into a new directory, with a manifest; then check
    /// it. Goes through the running daemon when there is one.
    Backup {
        /// The directory to create.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Rebuild an empty data directory from a backup: checks the backup and that the HSM holds
    /// every CA key of it; never reuses a published CRL number; takes back the revocations
    /// published to the responder nodes' engine after the backup (`[nats]`).
    Restore {
        /// The backup directory (`sceau backup --out`).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// A CA with security officers: the restore's proposal (`sceau ceremony propose
        /// restore --backup DIR`), run with M approvals.
        #[arg(long, value_name = "FILE", requires = "approvals")]
        proposal: Option<PathBuf>,
        /// An officer's approval of the proposal; once per officer.
        #[arg(long = "approval", value_name = "FILE", requires = "proposal")]
        approvals: Vec<PathBuf>,
    },
    /// Publish to the responder nodes' engine (`[nats]`) every status, CRL and CA certificate
    /// the store holds, through the running daemon (which also does it by itself when it finds
    /// the status bucket new, re-created or short of entries).
    Publish {
        /// Every status, not only what changed (the only mode: required, so that the
        /// command says what it does).
        #[arg(long, required = true)]
        all: bool,
    },
    /// Scheduled revocations (`sceau revoke --at`).
    #[command(subcommand)]
    Scheduled(ScheduledCommand),
    /// Generate and publish every CRL (and the root's ARL) now.
    Crl,
    /// Key ceremony for development and tests only: create the root, issuing CA and OCSP
    /// responder keys in the HSM and their certificates, run by one person. Runs once per
    /// store. A real CA is made by its security officers: `sceau ceremony propose init`.
    Init {
        /// The root is kept elsewhere: write a CSR for the issuing CA instead, to be completed
        /// with `sceau ca import-cert`.
        #[arg(long)]
        external_root: bool,
        /// Required: this CA's key operations will be run by one person, with no security
        /// officers (development, tests).
        #[arg(long)]
        without_dual_control: bool,
    },
    /// Present a security officer's share of the PIN to the sealed daemon (docs/ceremonies.md,
    /// "The PIN"): signed by the officer's card through its PKCS#11 module (--module ...), or
    /// written to sign with openssl (--request-out) and presented signed (--signed).
    Unseal(UnsealArgs),
    /// Key ceremonies under dual control (docs/ceremonies.md): propose one, run it with the
    /// security officers' approvals, verify its transcript.
    #[command(subcommand)]
    Ceremony(CeremonyCommand),
    /// CA certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue one certificate from a PKCS#10 request (offline, administrator use) and print it
    /// as PEM.
    Issue(IssueArgs),
    /// Agent cards (an authentication and a signature certificate).
    #[command(subcommand)]
    Card(CardCommand),
    /// Certificates in the store.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The delegated OCSP responder.
    #[command(subcommand)]
    Ocsp(OcspCommand),
    /// The registration authority: its operators' client (reaching the RA over mutual TLS and
    /// signing with their card), and the bootstrap of the first AE on the CA host.
    Ra(RaArgs),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Load the configuration and the policies, log in to the HSM and check every CA key
    /// against its certificate, then exit.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum ScheduledCommand {
    /// Every scheduled revocation, soonest first, as JSON.
    List,
    /// Cancel a scheduled revocation before its time.
    Cancel {
        /// Its id (from `sceau revoke --at` or `sceau scheduled list`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Write every CA certificate and the OCSP responder certificate into DIR as PEM.
    Export {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Complete `init --external-root` with the issuing CA certificate made by the root.
    ImportCert {
        /// PEM: the issuing CA certificate, optionally followed by the root certificate.
        file: PathBuf,
        /// The root certificate, when it is not in FILE.
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
    },
    /// Show the CA certificates and keys.
    Show,
    /// Key rollover. Without --root: a new issuing CA key in the HSM, certified by the root,
    /// with its own OCSP responder; new certificates are issued by it while the previous CA
    /// keeps signing CRLs and OCSP responses for its own. With --root: a new root key and the
    /// two link certificates (new-with-old, old-with-new); the next `ca rotate` certifies its
    /// issuing CA with it. Through a running daemon, everything is in force when the command
    /// returns, without a restart.
    Rotate {
        #[arg(long)]
        root: bool,
        /// The new CA's common name. Default: the configured one followed by the generation
        /// (`AC AGENTS JUSTICE TEST 2`); every generation has a name of its own.
        #[arg(long, value_name = "CN")]
        common_name: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Certification policy (a file name of the policies directory, without .toml).
    #[arg(long)]
    pub policy: String,
    /// The certification request, PEM or DER. Repeat to issue several certificates: each is
    /// printed as soon as it is stored.
    #[arg(long, value_name = "FILE", required = true)]
    pub csr: Vec<PathBuf>,
    /// The holder's identifier (agent number); names are never reused across holders.
    #[arg(long, value_name = "ID")]
    pub holder: Option<String>,
    /// End of validity (RFC 3339, e.g. 2029-06-30T23:59:59Z); by default the longest the policy
    /// allows.
    #[arg(long, value_name = "TIME")]
    pub not_after: Option<String>,
    /// Write the certificate to FILE instead of standard output (one CSR only).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// Issue both certificates of a card, or neither.
    Issue {
        #[arg(long, value_name = "ID")]
        holder: String,
        /// The card's identifier (random when absent).
        #[arg(long, value_name = "ID")]
        card: Option<String>,
        /// CSR for the authentication key.
        #[arg(long, value_name = "FILE")]
        auth_csr: PathBuf,
        /// CSR for the signature key.
        #[arg(long, value_name = "FILE")]
        sign_csr: PathBuf,
        #[arg(long, default_value = "justice-auth")]
        auth_policy: String,
        #[arg(long, default_value = "justice-sign")]
        sign_policy: String,
        /// Write auth.pem and sign.pem into DIR instead of printing both.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Show what the store knows of a serial number, as JSON (state: issued, revoked,
    /// intent or unknown).
    Show {
        /// Hexadecimal, as `openssl x509 -serial` prints it.
        serial: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OcspCommand {
    /// Renew the responder now: a new key in the HSM, a new certificate from the issuing CA, and
    /// (through a running daemon) every response re-signed with it. The daemon also does it by
    /// itself past two thirds of the certificate's life.
    RenewSigner,
}

#[derive(Debug, clap::Args)]
pub struct RaArgs {
    #[command(flatten)]
    pub client: super::ra_client::ClientOptions,
    #[command(subcommand)]
    pub command: RaCommand,
}

#[derive(Debug, Subcommand)]
pub enum RaCommand {
    #[command(flatten)]
    Client(super::ra_client::ClientCommand),
    /// Register an AE on the CA host: the first one, or a replacement when no AE can act any
    /// more. The other operators are designated through the RA API.
    Bootstrap {
        /// The AE's card (`sceau card issue`): its authentication certificate is the credential.
        #[arg(long, value_name = "ID")]
        card: String,
        /// Organisations (subject O) in its scope; by default the card's own O.
        #[arg(long, value_name = "O")]
        organization: Vec<String>,
        /// Units (subject OU) in its scope; by default every unit.
        #[arg(long, value_name = "OU")]
        unit: Vec<String>,
        /// Policies in its scope; by default every loaded policy.
        #[arg(long, value_name = "NAME")]
        policy: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CeremonyCommand {
    /// Write what exactly will happen, for the officers to approve: each signs the file's
    /// bytes with their card (`openssl cms -sign -binary -nodetach -outform DER`).
    Propose {
        /// init, rotate-issuing, rotate-root, renew-responders, backup, restore,
        /// change-officers, destroy-key, split-pin or change-policies.
        operation: String,
        /// init, change-officers: a security officer's signature certificate (PEM or DER);
        /// once per officer.
        #[arg(long = "officer", value_name = "CERT")]
        officers: Vec<PathBuf>,
        /// init, change-officers: how many officers approve each ceremony (at least 2).
        #[arg(long, value_name = "M")]
        quorum: Option<usize>,
        /// rotate-issuing, rotate-root: the new CA's common name.
        #[arg(long, value_name = "CN")]
        common_name: Option<String>,
        /// backup: the directory to create.
        #[arg(long, value_name = "DIR")]
        backup_to: Option<PathBuf>,
        /// destroy-key: the label of the key to destroy (an orphan key left by an interrupted
        /// ceremony; `sceau ceremony status` lists them).
        #[arg(long, value_name = "LABEL")]
        key_label: Option<String>,
        /// restore: the backup to restore (proposed from the backup itself, on the host
        /// restored to).
        #[arg(long, value_name = "DIR")]
        backup: Option<PathBuf>,
        /// split-pin: the directory to create for the officers' share files (one each).
        #[arg(long, value_name = "DIR")]
        shares_out: Option<PathBuf>,
        /// change-policies: the directory holding the policy files to put in force (all of
        /// them: the policy directory will hold exactly these).
        #[arg(long, value_name = "DIR")]
        policies_from: Option<PathBuf>,
        /// How long the proposal waits for its approvals: 90s, 30m, 8h (at most 24h).
        #[arg(long, value_name = "DURATION", default_value = "8h")]
        valid_for: String,
        /// Where to write the proposal.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Run a proposal with M approvals: checked, claimed (never run twice), carried out;
    /// its transcript and report are written to `data_dir/ceremonies`.
    Run {
        /// The proposal file, as the officers signed it.
        proposal: PathBuf,
        /// An officer's approval (CMS SignedData, DER or PEM); once per officer.
        #[arg(long = "approval", value_name = "FILE", required = true)]
        approvals: Vec<PathBuf>,
    },
    /// An officer's approval, signed by their card through its PKCS#11 module: an attached
    /// CMS SignedData over the proposal's bytes (what `openssl cms -sign -binary -nodetach`
    /// makes). Needs no configuration: it runs on the officer's own workstation.
    Approve {
        /// The proposal file, as `sceau ceremony propose` wrote it (read before signing).
        proposal: PathBuf,
        /// The card's PKCS#11 module (e.g. OpenSC's `opensc-pkcs11.so`).
        #[arg(long, value_name = "PATH")]
        module: PathBuf,
        /// The card's token label.
        #[arg(long, value_name = "LABEL")]
        token: String,
        /// The label of the card's signature key.
        #[arg(long, value_name = "LABEL")]
        key_label: String,
        /// The card's signature certificate (PEM or DER): the approval names it, and the key
        /// on the card must be its key.
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// A file holding the card's PIN; without it, the environment variable
        /// `SCEAU_CARD_PIN`.
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
        /// Where to write the approval (DER).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Who authorises this CA's key operations (the officers and the quorum, or one person),
    /// the key position proposals follow, and every ceremony claimed, as JSON.
    Status,
    /// Check transcripts offline: the audit key's signature, the approvals, the quorum, the
    /// persons. Needs no daemon, store or HSM.
    Verify {
        #[arg(required = true, value_name = "TRANSCRIPT")]
        transcripts: Vec<PathBuf>,
        /// The audit key's public key (`certs/audit-key.pem`), kept outside the CA host.
        #[arg(long, value_name = "FILE")]
        anchor: PathBuf,
        /// Write the readable report (HTML) of the one transcript given.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
}

/// `sceau unseal`.
#[derive(Debug, clap::Args)]
pub struct UnsealArgs {
    /// The officer's share file, as the split-pin ceremony wrote it.
    #[arg(long, value_name = "FILE")]
    pub share: Option<PathBuf>,
    /// The card's PKCS#11 module (e.g. OpenSC's `opensc-pkcs11.so`).
    #[arg(long, value_name = "PATH", requires_all = ["share", "token", "key_label", "certificate"])]
    pub module: Option<PathBuf>,
    /// The card's token label.
    #[arg(long, value_name = "LABEL")]
    pub token: Option<String>,
    /// The label of the card's signature key.
    #[arg(long, value_name = "LABEL")]
    pub key_label: Option<String>,
    /// The card's signature certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub certificate: Option<PathBuf>,
    /// A file holding the card's PIN; without it, the environment variable `SCEAU_CARD_PIN`.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Write the bytes to sign (the share, bound to this start of the daemon) instead of
    /// signing with a card: `openssl cms -sign -binary -nodetach -outform DER` signs them.
    #[arg(long, value_name = "FILE", requires = "share", conflicts_with_all = ["module", "signed"])]
    pub request_out: Option<PathBuf>,
    /// Present a share signed beforehand (CMS SignedData, DER or PEM).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["module", "share"])]
    pub signed: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain and every signed checkpoint; name the first bad entry.
    Verify {
        /// The audit key's public key kept outside the store (`certs/audit-key.pem`, written
        /// by `sceau init`): every checkpoint is checked against it, not against the key the
        /// store records. Needed with --bundle.
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
        /// Check an auditor's bundle (`sceau audit export --bundle`) instead of the store:
        /// offline, with no configuration, store or HSM.
        #[arg(long, value_name = "FILE", requires = "anchor")]
        bundle: Option<PathBuf>,
        /// With --bundle: write the RA's activity over the period, per unit, as HTML.
        #[arg(long, value_name = "FILE", requires = "bundle")]
        report: Option<PathBuf>,
        /// An entry and its hash as the daemon's journal logged them at a checkpoint
        /// (`SEQ:HASH`): the log must still hold it (a truncated or rewritten tail does not).
        #[arg(long, value_name = "SEQ:HASH")]
        expect: Vec<String>,
    },
    /// Sign a checkpoint of the chain with the audit key in the HSM now (the daemon also
    /// does it every five minutes when the log grew).
    Checkpoint,
    /// Write the log as JSON lines; or, with --bundle, an auditor's bundle of a period.
    Export {
        #[arg(long, value_name = "FILE", conflicts_with = "bundle")]
        out: Option<PathBuf>,
        /// The auditor's bundle: the entries of the period between two signed checkpoints,
        /// checkable offline (`sceau audit verify --bundle FILE --anchor audit-key.pem`). A
        /// checkpoint is signed first when none follows the period's end yet.
        #[arg(long, value_name = "FILE", requires_all = ["from", "to"])]
        bundle: Option<PathBuf>,
        /// The period's start (RFC 3339).
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// The period's end (RFC 3339); a time to come is now.
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
    },
}
