-- The SQL ledger that ledgerd is compared with (benches/postgres/compare.sh).
--
-- A standard shape: accounts hold their balance; transfers have unique ids; a transfer locks
-- both account rows FOR UPDATE in id order (so concurrent transfers never deadlock), checks the
-- funds under those locks, moves the money and records the transfer, all in one transaction.
-- PostgreSQL is given its fastest honest form: the logic runs server-side in PL/pgSQL, so a
-- single transfer is one round trip and one commit, and a batch of 1,000 is one round trip and
-- one commit. In a batch every account the batch touches is locked up front, in id order, and
-- each item is pre-checked under those locks: a failing item (insufficient funds, unknown
-- account, replayed id) returns its code and never aborts the others, with no savepoint.
--
-- The indexes on the transfers' accounts serve an account's history, which ledgerd serves too
-- (GET /v1/accounts/{id}/transfers).

DROP FUNCTION IF EXISTS transfer_batch(text[], text[], text[], numeric[]);
DROP FUNCTION IF EXISTS transfer(text, text, text, numeric);
DROP FUNCTION IF EXISTS apply_transfer(text, text, text, numeric);
DROP TABLE IF EXISTS transfers;
DROP TABLE IF EXISTS accounts;

CREATE TABLE accounts (
    id text PRIMARY KEY,
    currency text NOT NULL,
    balance numeric NOT NULL DEFAULT 0,
    -- NULL: no lower bound (the funding account).
    overdraft_limit numeric,
    CONSTRAINT within_overdraft_limit CHECK (overdraft_limit IS NULL OR balance >= -overdraft_limit)
);

CREATE TABLE transfers (
    id text PRIMARY KEY,
    debit_account text NOT NULL REFERENCES accounts (id),
    credit_account text NOT NULL REFERENCES accounts (id),
    amount numeric NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transfers_debit_account ON transfers (debit_account);
CREATE INDEX transfers_credit_account ON transfers (credit_account);

-- One transfer; the caller holds the locks of both accounts. Returns 'created' or the code of
-- the first check that fails, in the order of ledgerd's contract.
CREATE FUNCTION apply_transfer(p_id text, p_debit text, p_credit text, p_amount numeric)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    debit_currency text;
    debit_balance numeric;
    debit_limit numeric;
    credit_currency text;
BEGIN
    IF EXISTS (SELECT 1 FROM transfers WHERE id = p_id) THEN
        RETURN 'exists';
    END IF;
    IF p_debit = p_credit THEN
        RETURN 'accounts_must_be_different';
    END IF;
    SELECT currency, balance, overdraft_limit INTO debit_currency, debit_balance, debit_limit
        FROM accounts WHERE id = p_debit;
    IF NOT FOUND THEN
        RETURN 'debit_account_not_found';
    END IF;
    SELECT currency INTO credit_currency FROM accounts WHERE id = p_credit;
    IF NOT FOUND THEN
        RETURN 'credit_account_not_found';
    END IF;
    IF credit_currency <> debit_currency THEN
        RETURN 'currency_mismatch';
    END IF;
    IF debit_limit IS NOT NULL AND debit_balance - p_amount < -debit_limit THEN
        RETURN 'insufficient_funds';
    END IF;
    UPDATE accounts SET balance = balance - p_amount WHERE id = p_debit;
    UPDATE accounts SET balance = balance + p_amount WHERE id = p_credit;
    INSERT INTO transfers (id, debit_account, credit_account, amount) VALUES (p_id, p_debit, p_credit, p_amount);
    RETURN 'created';
END $$;

-- A single transfer, in its own transaction (autocommit).
CREATE FUNCTION transfer(p_id text, p_debit text, p_credit text, p_amount numeric)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM accounts WHERE id IN (p_debit, p_credit) ORDER BY id FOR UPDATE;
    RETURN apply_transfer(p_id, p_debit, p_credit, p_amount);
END $$;

-- A batch, in one transaction: items take effect one after another in index order.
CREATE FUNCTION transfer_batch(p_ids text[], p_debits text[], p_credits text[], p_amounts numeric[])
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    results text[] := ARRAY[]::text[];
BEGIN
    PERFORM 1 FROM accounts WHERE id = ANY (p_debits || p_credits) ORDER BY id FOR UPDATE;
    FOR item IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        results[item] := apply_transfer(p_ids[item], p_debits[item], p_credits[item], p_amounts[item]);
    END LOOP;
    RETURN results;
END $$;
