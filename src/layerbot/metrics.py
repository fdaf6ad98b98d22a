"""Prometheus metrics, served at /metrics. One registry per process."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

DELIVERIES = Counter("layerbot_deliveries_total", "Webhook deliveries by outcome",
                     ["outcome"], registry=REGISTRY)  # accepted, duplicate, replayed, rejected_*
EVENTS = Counter("layerbot_events_total", "Inbox events handled, by outcome",
                 ["event", "outcome"], registry=REGISTRY)  # handled, ignored, retry, failed
#: Events of repositories outside github.repositories (e.g. another installation of the App).
EVENTS_NOT_ALLOWED = Counter("layerbot_events_not_allowed_total",
                             "Events ignored because their repository is not allowed",
                             ["event"], registry=REGISTRY)
EVENTS_MALFORMED = Counter("layerbot_events_malformed_total",
                           "Signed events ignored because their body lacks what the "
                           "handlers read", ["event"], registry=REGISTRY)
INBOX_LAG = Gauge("layerbot_inbox_lag_seconds", "Age of the oldest unfinished event",
                  registry=REGISTRY)
OUTBOX_BACKLOG = Gauge("layerbot_outbox_backlog", "GitHub writes waiting to be sent",
                       registry=REGISTRY)
GITHUB_WRITES = Counter("layerbot_github_writes_total", "GitHub writes by kind and outcome",
                        ["kind", "outcome"], registry=REGISTRY)
RATE_LIMIT_REMAINING = Gauge("layerbot_github_rate_limit_remaining",
                             "GitHub API requests left in the current window",
                             ["resource"], registry=REGISTRY)
WEBHOOK_SECONDS = Histogram("layerbot_webhook_seconds", "Time to answer a webhook delivery",
                            registry=REGISTRY,
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5))
JOBS = Gauge("layerbot_jobs", "Jobs by state (active states only)", ["state"],
             registry=REGISTRY)
JOB_TRANSITIONS = Counter("layerbot_job_transitions_total", "Job state changes",
                          ["state"], registry=REGISTRY)
BACKEND_CALLS = Counter("layerbot_backend_calls_total", "Batch-system calls", ["backend"],
                        registry=REGISTRY)
AGENT_CLAIMS = Counter("layerbot_agent_claims_total", "Jobs leased to agents", ["agent"],
                       registry=REGISTRY)
LEASES_REAPED = Counter("layerbot_leases_reaped_total",
                        "Leases of silent agents: jobs requeued or lost", ["outcome"],
                        registry=REGISTRY)
#: 1 where this replica runs the singleton loop (app/singletons.py), 0 elsewhere.
SINGLETON_HELD = Gauge("layerbot_singleton_held",
                       "1 while this replica holds the singleton's lock and runs its loop",
                       ["name"], registry=REGISTRY)
