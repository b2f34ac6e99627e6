"""Provider webhooks (carrier tracking events, SMS status callbacks, inbound SMS): each event acted on once."""
