//! The RA client's command line (docs/ra-client.md).

use std::path::PathBuf;

use clap::Subcommand;

/// Where the RA is and which card signs: on every client command, or from the environment
/// (a workstation sets them once).
#[derive(Debug, clap::Args)]
pub struct ClientOptions {
    /// The RA listener, e.g. https://ra.example:8443.
    #[arg(long, global = true, env = "SCEAU_RA", value_name = "URL")]
    pub ra: Option<String>,
    /// The certificate (PEM) that the RA listener's certificate must chain to, or be.
    #[arg(long, global = true, env = "SCEAU_RA_CA", value_name = "FILE")]
    pub ra_ca: Option<PathBuf>,
    /// The card's PKCS#11 module (OpenSC's for a card in a reader).
    #[arg(long, global = true, env = "SCEAU_CARD_MODULE", value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// The card's token label.
    #[arg(long, global = true, env = "SCEAU_CARD_TOKEN", value_name = "LABEL")]
    pub token: Option<String>,
    /// The card's authentication certificate (PEM or DER); by default, the one on the card.
    #[arg(long, global = true, env = "SCEAU_CARD_AUTH_CERT", value_name = "FILE")]
    pub auth_cert: Option<PathBuf>,
    /// The card's signature certificate (PEM or DER); by default, the one on the card.
    #[arg(long, global = true, env = "SCEAU_CARD_SIGN_CERT", value_name = "FILE")]
    pub sign_cert: Option<PathBuf>,
    /// A file holding the card's PIN (a card management system's); by default the
    /// environment variable SCEAU_CARD_PIN, else a prompt on the terminal. Never an argument.
    #[arg(long, global = true, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Print the RA's answers as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// An operator's commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Who the RA takes this card for: the operator, role and scope.
    Me,
    /// The pending requests in your scope (your own submissions included), oldest first.
    Queue,
    /// One request as you must see it before approving it: holder, subject, policies,
    /// submitter, key types, what changed since the previous card.
    Show {
        #[arg(value_name = "REQUEST")]
        request: String,
    },
    /// Approve requests: each is shown, then all of them are approved with one signature per
    /// hundred (each named by the digest of the submission you were shown).
    Approve {
        #[arg(value_name = "REQUEST", required = true)]
        requests: Vec<String>,
        /// Approve without asking for confirmation (scripts; a terminal asks otherwise).
        #[arg(long)]
        yes: bool,
    },
    /// Reject a request, saying why.
    Reject {
        #[arg(value_name = "REQUEST")]
        request: String,
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Submit a card request for a holder met face to face: the card's two CSRs.
    Submit {
        /// The holder's identifier (agent number).
        #[arg(long, value_name = "ID")]
        holder: String,
        /// The card's identifier; the RA makes one up when absent.
        #[arg(long, value_name = "ID")]
        card: Option<String>,
        #[arg(long, value_name = "FILE")]
        auth_csr: PathBuf,
        #[arg(long, value_name = "FILE")]
        sign_csr: PathBuf,
    },
    /// Revoke a card (both certificates) or one certificate, now or at a date.
    Revoke {
        #[arg(long, value_name = "ID", required_unless_present = "serial")]
        card: Option<String>,
        #[arg(long, value_name = "HEX", conflicts_with = "card")]
        serial: Option<String>,
        /// key-compromise, affiliation-changed, superseded, cessation-of-operation,
        /// certificate-hold, privilege-withdrawn, unspecified.
        #[arg(long, value_name = "REASON")]
        reason: Option<String>,
        /// When the revocation takes effect (RFC 3339), e.g. a departure date.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Propose to revoke every certificate a query selects in your scope (another person
    /// approves it); with --dry-run, only list them.
    BulkRevoke {
        /// Holders carrying this unit (subject OU); once each.
        #[arg(long = "unit", value_name = "OU")]
        units: Vec<String>,
        /// Certificates of this policy; once each.
        #[arg(long = "policy", value_name = "NAME")]
        policies: Vec<String>,
        /// Holders by id; once each, or a file of ids, one a line, with --holders-from.
        #[arg(long = "holder", value_name = "ID")]
        holders: Vec<String>,
        #[arg(long, value_name = "FILE")]
        holders_from: Option<PathBuf>,
        /// Issued at or after (RFC 3339).
        #[arg(long, value_name = "TIME")]
        issued_after: Option<String>,
        /// Issued before (RFC 3339).
        #[arg(long, value_name = "TIME")]
        issued_before: Option<String>,
        #[arg(long, value_name = "REASON")]
        reason: String,
        /// List what would be revoked; record nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A proposed bulk revocation and its list.
    BulkShow {
        #[arg(value_name = "BULK")]
        bulk: String,
    },
    /// Approve a bulk revocation proposed by another operator: its list is shown, then revoked
    /// at once (named by the digest of what was shown).
    BulkApprove {
        #[arg(value_name = "BULK")]
        bulk: String,
        /// Approve without asking for confirmation (scripts; a terminal asks otherwise).
        #[arg(long)]
        yes: bool,
    },
    /// Designate an operator below you: the holder of a card of this CA.
    Designate {
        /// AE, AEC, AED or OC.
        #[arg(long)]
        role: String,
        #[arg(long, value_name = "ID")]
        holder: String,
        #[arg(long, value_name = "ID")]
        card: String,
        /// Organisations (subject O) in the scope; once each.
        #[arg(long = "organization", value_name = "O", required = true)]
        organizations: Vec<String>,
        /// Units (subject OU) in the scope; by default every unit of the organisations.
        #[arg(long = "unit", value_name = "OU")]
        units: Vec<String>,
        /// Policies in the scope; once each.
        #[arg(long = "policy", value_name = "NAME", required = true)]
        policies: Vec<String>,
    },
    /// Withdraw an operator you designated (directly or below you), and everyone it
    /// designated.
    Withdraw {
        #[arg(value_name = "OPERATOR")]
        operator: String,
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Record a card's handover at the counter: the holder signs the receipt with the new
    /// card (in a second reader, their PIN typed or in SCEAU_HOLDER_PIN), you countersign it.
    Handover {
        #[arg(value_name = "CARD")]
        card: String,
        /// The new card's token label.
        #[arg(long, value_name = "LABEL", required_unless_present = "receipt")]
        holder_token: Option<String>,
        /// What the receipt says the holder received.
        #[arg(
            long,
            value_name = "TEXT",
            default_value = "Carte reçue en main propre"
        )]
        statement: String,
        /// A receipt the holder signed beforehand (CMS, DER or PEM) instead.
        #[arg(long, value_name = "FILE", conflicts_with = "holder_token")]
        receipt: Option<PathBuf>,
    },
    /// Write a card's certificates (auth.pem, sign.pem) to a directory.
    Export {
        #[arg(value_name = "CARD")]
        card: String,
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// A certificate request (PKCS#10) signed by a key on the card: how a new card's keys,
    /// made on the card, are certified. Needs no RA.
    Csr {
        /// The key's label on the card.
        #[arg(long, value_name = "LABEL")]
        key_label: String,
        /// The subject, as `/C=FR/O=.../OU=.../GN=.../SN=.../CN=...` (UTF-8).
        #[arg(long, value_name = "DN")]
        subject: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}
