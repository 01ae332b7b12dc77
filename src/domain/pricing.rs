//! The per-message pricing hint (SPEC §4), named as WhatsApp's pricing
//! object names it. A hint at decision time: WhatsApp charges on delivery.

use super::template::Category;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PricingCategory {
    Service,
    ReferralConversion,
    Utility,
    Marketing,
    Authentication,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    pub category: PricingCategory,
    pub billable: bool,
}

/// `template`: the template's category, `None` for a free-form message.
pub fn price(template: Option<Category>, window_open: bool, in_free_period: bool) -> Pricing {
    let (category, billable) = match template {
        _ if in_free_period => (PricingCategory::ReferralConversion, false),
        None => (PricingCategory::Service, false),
        Some(Category::Utility) => (PricingCategory::Utility, !window_open),
        Some(Category::Marketing) => (PricingCategory::Marketing, true),
        Some(Category::Authentication) => (PricingCategory::Authentication, true),
    };
    Pricing { category, billable }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pricing_table() {
        use Category::*;
        use PricingCategory as P;
        let cases = [
            // (template, window open, free period) -> (category, billable)
            (None, true, false, P::Service, false),
            (None, true, true, P::ReferralConversion, false),
            (Some(Utility), true, false, P::Utility, false),
            (Some(Utility), false, false, P::Utility, true),
            (Some(Marketing), true, false, P::Marketing, true),
            (Some(Marketing), false, false, P::Marketing, true),
            (Some(Authentication), true, false, P::Authentication, true),
            (Some(Authentication), false, false, P::Authentication, true),
            (Some(Marketing), false, true, P::ReferralConversion, false),
            (Some(Utility), false, true, P::ReferralConversion, false),
            (
                Some(Authentication),
                true,
                true,
                P::ReferralConversion,
                false,
            ),
        ];
        for (template, open, free, category, billable) in cases {
            assert_eq!(
                price(template, open, free),
                Pricing { category, billable },
                "{template:?} open={open} free={free}"
            );
        }
    }
}
