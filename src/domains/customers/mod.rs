//! Customers: who may order, and the credit their wallet opens with.
//!
//! Fed by commands only (the REST API). Emits `customer.registered` (payments opens the
//! wallet from it) and `customer.updated` on `customers.events`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Context, Domain, DomainError, NoEvents, Subscription};

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email address, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Largest opening credit: ten billion units of currency, far below what sums of it overflow.
pub const MAX_CREDIT_CENTS: i64 = 1_000_000_000_000;

/// The customers domain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Customers;

/// A registered customer. The entity's state is `Option<Customer>`: `None` until registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: String,
    /// The credit the wallet opened with (payments owns the balance).
    pub credit_cents: i64,
    /// When the customer registered.
    pub registered_at: DateTime<Utc>,
    /// When the profile last changed.
    pub updated_at: DateTime<Utc>,
}

/// What registering takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: String,
    /// Opening credit of the wallet.
    pub credit_cents: i64,
}

/// A change of profile: fields left `None` keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileChange {
    /// The version the client read (`If-Match`); `None` changes whatever the version.
    pub expected_version: Option<u64>,
    /// New name.
    pub name: Option<String>,
    /// New email.
    pub email: Option<String>,
}

/// Commands of the customers API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    /// Registers the customer under the command's key.
    Register(Registration),
    /// Changes name or email.
    Update(ProfileChange),
}

/// Events customers emits on `customers.events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum CustomerOutput {
    /// A customer registered; its wallet opens with `credit_cents`.
    #[serde(rename = "customer.registered")]
    Registered(CustomerRegistered),
    /// A customer's name or email changed.
    #[serde(rename = "customer.updated")]
    Updated(CustomerUpdated),
}

/// The data of `customer.registered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerRegistered {
    /// The customer's id (also the envelope key).
    pub customer_id: String,
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: String,
    /// Opening credit of the wallet.
    pub credit_cents: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// The data of `customer.updated`: the profile after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerUpdated {
    /// The customer's id.
    pub customer_id: String,
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl Domain for Customers {
    type State = Option<Customer>;
    type Event = NoEvents;
    type Output = CustomerOutput;
    type Timer = NoEvents;
    type Command = CustomerCommand;
    type Reply = Customer;

    fn name(&self) -> &'static str {
        "customers"
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        Vec::new()
    }

    fn handle(
        &self,
        _: &mut Option<Customer>,
        event: NoEvents,
        _: &mut Context<CustomerOutput>,
    ) -> Result<(), DomainError> {
        match event {}
    }

    fn execute(
        &self,
        state: &mut Option<Customer>,
        command: CustomerCommand,
        ctx: &mut Context<CustomerOutput>,
    ) -> Result<Customer, DomainError> {
        match command {
            CustomerCommand::Register(registration) => register(state, registration, ctx),
            CustomerCommand::Update(change) => update(state, change, ctx),
        }
    }
}

fn register(
    state: &mut Option<Customer>,
    registration: Registration,
    ctx: &mut Context<CustomerOutput>,
) -> Result<Customer, DomainError> {
    if state.is_some() {
        return Err(DomainError::Rejected {
            code: "already_registered",
            message: format!("customer {:?} is already registered", ctx.key()),
        });
    }
    let Registration {
        name,
        email,
        credit_cents,
    } = registration;
    check_name(&name)?;
    check_email(&email)?;
    if !(0..=MAX_CREDIT_CENTS).contains(&credit_cents) {
        return Err(DomainError::Invalid(format!(
            "credit_cents must be between 0 and {MAX_CREDIT_CENTS}"
        )));
    }
    let at = ctx.input().timestamp;
    let customer = Customer {
        name,
        email,
        credit_cents,
        registered_at: at,
        updated_at: at,
    };
    ctx.emit(CustomerOutput::Registered(CustomerRegistered {
        customer_id: ctx.key().to_owned(),
        name: customer.name.clone(),
        email: customer.email.clone(),
        credit_cents,
        at,
    }));
    *state = Some(customer.clone());
    Ok(customer)
}

fn update(
    state: &mut Option<Customer>,
    change: ProfileChange,
    ctx: &mut Context<CustomerOutput>,
) -> Result<Customer, DomainError> {
    let Some(customer) = state else {
        return Err(DomainError::NotFound {
            what: "customer",
            id: ctx.key().to_owned(),
        });
    };
    if let Some(expected) = change.expected_version
        && expected != ctx.version()
    {
        return Err(DomainError::Stale {
            expected,
            current: ctx.version(),
        });
    }
    if let Some(name) = change.name {
        check_name(&name)?;
        customer.name = name;
    }
    if let Some(email) = change.email {
        check_email(&email)?;
        customer.email = email;
    }
    let at = ctx.input().timestamp;
    customer.updated_at = at;
    let updated = customer.clone();
    ctx.emit(CustomerOutput::Updated(CustomerUpdated {
        customer_id: ctx.key().to_owned(),
        name: updated.name.clone(),
        email: updated.email.clone(),
        at,
    }));
    Ok(updated)
}

/// A name is 1 to [`MAX_NAME_CHARS`] characters, not blank, without control characters.
pub fn check_name(name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() {
        return Err(DomainError::Invalid("name must not be blank".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(DomainError::Invalid(format!(
            "name must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::Invalid(
            "name must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// An address `local@domain.tld` of at most [`MAX_EMAIL_BYTES`] bytes: one `@`, a local
/// part of 1 to 64 visible ASCII characters, and a domain of dot-separated labels of letters,
/// digits and hyphens (not at either end of a label). Deliverability is not this check's
/// business. The API documents the same rule as a pattern.
pub fn check_email(email: &str) -> Result<(), DomainError> {
    let invalid = |why: &str| Err(DomainError::Invalid(format!("email {why}")));
    if email.len() > MAX_EMAIL_BYTES {
        return invalid(&format!("must be at most {MAX_EMAIL_BYTES} bytes"));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return invalid("must contain an @");
    };
    if local.is_empty() || local.len() > 64 {
        return invalid("must have a local part of 1 to 64 bytes before the @");
    }
    if !local.bytes().all(|b| b.is_ascii_graphic() && b != b'@') {
        return invalid("must have a local part of visible ASCII characters, without a second @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return invalid("must have a domain such as example.com after the @");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testkit::TestKit;
    use crate::domain::{EventCatalogue, Failure};

    fn alice() -> Registration {
        Registration {
            name: "Alice".into(),
            email: "alice@example.com".into(),
            credit_cents: 10_000,
        }
    }

    fn refused(result: Result<(Customer, crate::domain::Effects), Failure>) -> DomainError {
        match result {
            Err(Failure::Handler(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn registering_emits_the_opening_credit_once() {
        let mut kit = TestKit::new(Customers);
        let (customer, effects) = kit
            .command("c1", CustomerCommand::Register(alice()))
            .unwrap();
        assert_eq!(customer.credit_cents, 10_000);
        assert_eq!(effects.emitted.len(), 1);
        assert_eq!(
            effects.emitted[0].decode::<CustomerOutput>().unwrap(),
            CustomerOutput::Registered(CustomerRegistered {
                customer_id: "c1".into(),
                name: "Alice".into(),
                email: "alice@example.com".into(),
                credit_cents: 10_000,
                at: TestKit::<Customers>::START,
            })
        );
        let again = refused(kit.command("c1", CustomerCommand::Register(alice())));
        assert!(matches!(
            again,
            DomainError::Rejected {
                code: "already_registered",
                ..
            }
        ));
        assert_eq!(kit.entity("c1").unwrap().version, 1);
    }

    #[test]
    fn updates_check_the_version_the_client_read() {
        let mut kit = TestKit::new(Customers);
        kit.command("c1", CustomerCommand::Register(alice()))
            .unwrap();
        let rename = |expected_version| {
            CustomerCommand::Update(ProfileChange {
                expected_version,
                name: Some("Alicia".into()),
                email: None,
            })
        };
        let (customer, effects) = kit.command("c1", rename(Some(1))).unwrap();
        assert_eq!(customer.name, "Alicia");
        assert_eq!(customer.email, "alice@example.com");
        assert_eq!(effects.emitted[0].event_type, "customer.updated");
        let stale = refused(kit.command("c1", rename(Some(1))));
        assert_eq!(
            stale,
            DomainError::Stale {
                expected: 1,
                current: 2
            }
        );
        assert_eq!(kit.entity("c1").unwrap().version, 2, "nothing applied");
        kit.command("c1", rename(None)).unwrap();
    }

    #[test]
    fn updating_an_unknown_customer_is_not_found() {
        let mut kit = TestKit::new(Customers);
        let missing =
            refused(kit.command("nobody", CustomerCommand::Update(ProfileChange::default())));
        assert!(matches!(missing, DomainError::NotFound { .. }));
        assert!(kit.entity("nobody").is_none());
    }

    #[test]
    fn profiles_are_checked() {
        for (name, email, credit) in [
            ("", "a@example.com", 0),
            ("  ", "a@example.com", 0),
            ("a\u{0}b", "a@example.com", 0),
            (&"x".repeat(MAX_NAME_CHARS + 1), "a@example.com", 0),
            ("A", "a.example.com", 0),
            ("A", "a@example", 0),
            ("A", "a b@example.com", 0),
            ("A", "é@example.com", 0),
            ("A", "@example.com", 0),
            ("A", "a@@example.com", 0),
            ("A", "a@-x.com", 0),
            ("A", &format!("{}@example.com", "a".repeat(65)), 0),
            ("A", "a@example.com", -1),
            ("A", "a@example.com", MAX_CREDIT_CENTS + 1),
            ("A", "a@example.com", i64::MAX),
        ] {
            let mut kit = TestKit::new(Customers);
            let registration = Registration {
                name: name.into(),
                email: email.into(),
                credit_cents: credit,
            };
            let e = refused(kit.command("c", CustomerCommand::Register(registration)));
            assert!(
                matches!(e, DomainError::Invalid(_)),
                "{name:?} {email:?} {credit}: {e:?}"
            );
        }
        let mut kit = TestKit::new(Customers);
        let longest = Registration {
            name: "é".repeat(MAX_NAME_CHARS),
            email: "first.last+tag@mail.example-shop.co.uk".into(),
            credit_cents: MAX_CREDIT_CENTS,
        };
        kit.command("c", CustomerCommand::Register(longest))
            .unwrap();
    }

    #[test]
    fn the_catalogue_lists_both_events() {
        let catalogue = EventCatalogue::of::<Customers>().unwrap();
        assert!(catalogue.inputs.is_empty());
        assert_eq!(
            catalogue.outputs,
            ["customer.registered", "customer.updated"]
        );
    }
}
