"""Stripe webhooks: verify the signature, record the event once, dispatch it by type.

- `endpoint`: the view (`stripe_webhook`): body size, signature, shape, the duplicate fast path.
- `store`: the event store (`receive_event`, `reprocess_event`, `final_status`): one transaction
  per event, the API version check, what to ask Stripe before it.
- `queue`: the acknowledged mode: `accept_event` (the one-statement store), the batch task.
- `registry`: `@handles("event.type", wants_charge=...)`, which the handler modules use at import.
- `payments`, `refunds`, `disputes`: the handlers, by what they are about; `matching` finds our
  payment behind an event. A new kind of event gets a handler in a module of its own, imported
  below, without touching the dispatcher.

Two modes (`queue.webhooks_async`, the setting BILLING_WEBHOOKS_ASYNC; docs/DESIGN.md,
"Webhooks: acknowledge, then process"):

- With a task worker, `POST /billing/webhook/` stores the event in one statement and answers 200
  at once; `queue` runs it on the worker, in batches, retries it with backoff when it fails, and
  `billing_periodic` sweeps up any whose task was lost. 200 means "stored, never send it again".
- Without one, the endpoint answers 2xx only once the event's work has committed, so an answer
  of 200 means "done, never send it again" and anything else makes Stripe deliver it again later.

How each delivery is handled in the second mode (the first stores it the same way, and runs the
same handlers, with the same outcomes, on the worker):

- The signature is checked on the raw body (Stripe's 300 s tolerance) by
  `stripe_gateway.construct_event`. A bad signature, a body that is not a JSON event, or an
  event without an id and a type is answered 400 and nothing is stored.
- The event is stored and its work done in ONE transaction: the `StripeEvent` insert (its unique
  `event_id` is the deduplication), the handler's ledger and payment writes, and the final
  status. A crash anywhere in between leaves nothing behind, and Stripe's retry starts afresh;
  there is never a "processed" row whose work is missing, nor work without its row.
- A second delivery of the same event collides on the unique `event_id`. It waits (PostgreSQL
  blocks the insert) until the first delivery's transaction ends, then: if that one committed
  as processed, ignored or held, the duplicate is answered 200 at once without touching anything; if
  the stored event had FAILED, the duplicate runs it again under the event's row lock (Stripe
  redelivers precisely because we failed), so concurrent retries take turns.
- An event in another Stripe API version than the pinned one (`stripe_gateway.STRIPE_API_VERSION`)
  is stored as `held`, not applied, and answered 200; staff check it and run it from the admin
  (`store.receive_event` says why; docs/INSTALL.md, "Stripe API version").
- A handler exception rolls all of its work back; the event is then stored (or updated) as
  `failed` with the error text in a separate transaction, and the answer is 500 so Stripe
  retries. Staff can also rerun failed events from the admin (`reprocess_event`).
- Unknown event types, and events about things this site did not create, are stored as
  `ignored` (with the reason) and answered 200, so Stripe stops sending them: a PaymentIntent
  with no payment here (no `metadata.payment_id` and no payment with that intent id) or whose
  metadata names another installation's payment or another user, and a charge made without a
  PaymentIntent (the Charges API, as the original Node app and other systems on the same
  Stripe account use it). So are events that move no money: dispute inquiries (`warning_*`)
  and refunds that have not failed. An event whose metadata names a payment this database
  does not have, or that contradicts what we recorded for our own intent, is a `failed` event
  (500): it is ours but cannot be applied, which staff must see.
- What an event lacks but Stripe can tell (the PaymentIntent behind a dispute's charge, the
  full list of a charge's refunds) is asked of Stripe before the event's transaction starts:
  no Stripe call runs inside one. When Stripe cannot be reached the event fails (500), and
  Stripe's redelivery tries again.

Every handler ends in `billing.fulfilment`, whose functions are idempotent and settle from
Stripe's cumulative amounts, so a retry, a duplicate or an out-of-order event is always safe.
Money Stripe returns (a refund that failed, a dispute the merchant won) gives the credits back.
"""

# The handler modules register their event types when imported.
from billing.webhooks import disputes, payments, refunds  # noqa: F401
from billing.webhooks.endpoint import stripe_webhook
from billing.webhooks.store import final_status, receive_event, reprocess_event

__all__ = ["final_status", "receive_event", "reprocess_event", "stripe_webhook"]
