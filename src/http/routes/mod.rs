//! HTTP resources, one file each. Handlers extract, call into a service, and return a response
//! type or an [`ApiError`](crate::http::error::ApiError); they hold no logic of their own.

pub mod backends;
pub mod health;
pub mod mcp;
pub mod sessions;
pub mod tools;
