//! Provider adapters: verify and parse each git provider's push into a [`crate::Push`].
