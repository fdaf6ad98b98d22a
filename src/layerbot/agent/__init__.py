"""The agent: takes jobs from a ledger, prepares and submits them, watches them, reports."""
