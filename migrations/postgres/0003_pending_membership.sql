-- A membership that is not mailable now but is no opt-out either (issue 18): Mailchimp
-- `pending`, Shopify `not_subscribed`. It becomes `active` when the service says
-- subscribed; `unsubscribed` stays final.

ALTER TABLE memberships DROP CONSTRAINT memberships_status_check;
ALTER TABLE memberships ADD CONSTRAINT memberships_status_check
    CHECK (status IN ('active', 'pending', 'unsubscribed'));
