//! What every answer carries whichever the wire; each wire's module shapes it its own way.

/// What every reply carries, whichever the wire.
pub(super) struct Reply<'a> {
    pub(super) model: &'a str,
    pub(super) prompt_tokens: usize,
    pub(super) completion_tokens: usize,
}
