//! The kinds of business systems Qiao connects.

use serde::{Deserialize, Serialize};

/// What a system is. The kind labels logs and picks the stub that stands in for the system
/// in demos and tests. How a system reports a failure inside a 2xx answer is its `success`
/// rule ([`crate::success`]), not its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    Erp,
    Crm,
    Oa,
    Wms,
    Mes,
}

impl SystemKind {
    pub const ALL: [SystemKind; 5] = [Self::Erp, Self::Crm, Self::Oa, Self::Wms, Self::Mes];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erp => "erp",
            Self::Crm => "crm",
            Self::Oa => "oa",
            Self::Wms => "wms",
            Self::Mes => "mes",
        }
    }
}

impl std::fmt::Display for SystemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
