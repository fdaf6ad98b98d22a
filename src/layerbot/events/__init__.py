"""The event pipeline after the receiver: the inbox ``processor`` hands each event to the
handlers (one PR at a time, in arrival order), and ``reporting`` turns job states into the
PR's reply and check runs, written to the outbox in the same transaction.
"""
