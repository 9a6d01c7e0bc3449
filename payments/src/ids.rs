//! The ids the ledger derives for the money of payments. They begin with prefixes clients may
//! not use (`dep:`, `wd:`, `settlement:`), so that only these flows create them.

use engine::{Currency, Id, IdError};

/// Prefix of the transfer ids that credit deposits.
pub const DEPOSIT_TRANSFER_PREFIX: &str = "dep:";
/// Prefix of the transfer ids that hold withdrawals.
pub const WITHDRAWAL_TRANSFER_PREFIX: &str = "wd:";
/// Prefix of the providers' settlement account ids.
pub const SETTLEMENT_ACCOUNT_PREFIX: &str = "settlement:";

/// `dep:{provider}:{deposit_id}`.
pub fn deposit_transfer(provider: &str, deposit_id: &str) -> Result<Id, IdError> {
    Id::parse_internal(&format!("{DEPOSIT_TRANSFER_PREFIX}{provider}:{deposit_id}"))
}

/// `wd:{provider}:{withdrawal_id}`.
pub fn withdrawal_transfer(provider: &str, withdrawal_id: &str) -> Result<Id, IdError> {
    Id::parse_internal(&format!("{WITHDRAWAL_TRANSFER_PREFIX}{provider}:{withdrawal_id}"))
}

/// `settlement:{provider}:{currency}`: the account a provider's money moves through.
pub fn settlement_account(provider: &str, currency: &Currency) -> Result<Id, IdError> {
    Id::parse_internal(&format!("{SETTLEMENT_ACCOUNT_PREFIX}{provider}:{}", currency.code))
}

/// Whether a client may not create an account with this id.
pub fn is_reserved_account(id: &str) -> bool {
    id.starts_with(SETTLEMENT_ACCOUNT_PREFIX)
}

/// Whether a client may not create a transfer with this id.
pub fn is_reserved_transfer(id: &str) -> bool {
    id.starts_with(DEPOSIT_TRANSFER_PREFIX) || id.starts_with(WITHDRAWAL_TRANSFER_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_reserved() {
        let deposit = deposit_transfer("processor", &"d".repeat(60)).unwrap();
        assert_eq!(deposit.as_str().len(), 74);
        assert!(is_reserved_transfer(deposit.as_str()));
        assert!(is_reserved_transfer(withdrawal_transfer("processor", "w-9").unwrap().as_str()));
        assert!(is_reserved_account(settlement_account("processor", &Currency::new("EUR", 2)).unwrap().as_str()));
        assert!(!is_reserved_transfer("deposit-1") && !is_reserved_account("settlements"));
    }
}
