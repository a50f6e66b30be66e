//! Physical units carried in types, so a joule is never added to a watt by accident.

use serde::{Deserialize, Serialize};
use std::ops::{Add, Sub};

macro_rules! unit {
    ($name:ident, $sym:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);
        impl Add for $name {
            type Output = $name;
            fn add(self, o: $name) -> $name {
                $name(self.0 + o.0)
            }
        }
        impl Sub for $name {
            type Output = $name;
            fn sub(self, o: $name) -> $name {
                $name(self.0 - o.0)
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:.3} {}", self.0, $sym)
            }
        }
    };
}

unit!(Joules, "J");
unit!(Watts, "W");
unit!(Seconds, "s");

impl std::ops::Mul<Seconds> for Watts {
    type Output = Joules;
    fn mul(self, t: Seconds) -> Joules {
        Joules(self.0 * t.0)
    }
}

impl std::ops::Div<Seconds> for Joules {
    type Output = Watts;
    fn div(self, t: Seconds) -> Watts {
        Watts(if t.0 > 0.0 { self.0 / t.0 } else { 0.0 })
    }
}
