//! Issue 11's proof: what bad input and bad luck do to Tributary, tried on purpose. Each
//! module states what it tries and how often; `docs/reliability.md` keeps the figures.

mod crashes;
mod hostile;
mod limits;
mod logs;
mod properties;
mod secrets;
