"""Signed ``job.finished`` webhooks, per the Standard Webhooks specification.

- :mod:`webhooks.outbox`: the delivery rows, written in the transaction that ends a
  job, claimed and recorded by the delivery task, and swept by beat;
- :mod:`webhooks.guard`: which addresses a delivery may reach (no SSRF);
- :mod:`webhooks.sender`: one signed POST to a vetted address;
- :mod:`webhooks.policy`: what an attempt's outcome means (done, gone, retry when).

The Celery tasks live in :mod:`tasks.webhooks`; the API only records callback URLs
and shows deliveries.
"""
