//! Inverse of the standard normal cdf, needed to place the Panter–Dite starting
//! levels of the Gaussian solver (quantiles of N(0, 3)).
//!
//! Wichura's algorithm AS 241 (PPND16, Applied Statistics 37, 1988): three
//! rational approximations of degree 7/7, one for the centre and two for the
//! tails, about 1e-16 relative accuracy over the whole range of `f64`.

// The coefficients are kept digit for digit as published, so they can be
// checked against the paper; f64 rounds the surplus digits.
#![allow(clippy::excessive_precision)]

/// Centre region |p − ½| <= 0.425, in r = 0.180625 − q².
const CENTRE_NUM: [f64; 8] = [
    3.387_132_872_796_366_608,
    1.331_416_678_917_843_774_5e2,
    1.971_590_950_306_551_442_7e3,
    1.373_169_376_550_946_112_5e4,
    4.592_195_393_154_987_145_7e4,
    6.726_577_092_700_870_085_3e4,
    3.343_057_558_358_812_810_5e4,
    2.509_080_928_730_122_672_7e3,
];
const CENTRE_DEN: [f64; 8] = [
    1.0,
    4.231_333_070_160_091_125_2e1,
    6.871_870_074_920_579_083e2,
    5.394_196_021_424_751_107_7e3,
    2.121_379_430_158_659_586_7e4,
    3.930_789_580_009_271_061e4,
    2.872_908_573_572_194_267_4e4,
    5.226_495_278_852_854_561e3,
];
/// Intermediate tail, r = sqrt(−ln min(p, 1−p)) − 1.6 with r <= 5 before the shift.
const NEAR_NUM: [f64; 8] = [
    1.423_437_110_749_683_577_34,
    4.630_337_846_156_545_295_9,
    5.769_497_221_460_691_405_5,
    3.647_848_324_763_204_605_04,
    1.270_458_252_452_368_382_58,
    2.417_807_251_774_506_117_7e-1,
    2.272_384_498_926_918_458_33e-2,
    7.745_450_142_783_414_076_4e-4,
];
const NEAR_DEN: [f64; 8] = [
    1.0,
    2.053_191_626_637_758_821_87,
    1.676_384_830_183_803_849_4,
    6.897_673_349_851_000_045_5e-1,
    1.481_039_764_274_800_745_9e-1,
    1.519_866_656_361_645_719_66e-2,
    5.475_938_084_995_344_946e-4,
    1.050_750_071_644_416_843_24e-9,
];
/// Far tail, r = sqrt(−ln min(p, 1−p)) − 5.
const FAR_NUM: [f64; 8] = [
    6.657_904_643_501_103_777_2,
    5.463_784_911_164_114_369_9,
    1.784_826_539_917_291_335_8,
    2.965_605_718_285_048_912_3e-1,
    2.653_218_952_657_612_309_3e-2,
    1.242_660_947_388_078_438_6e-3,
    2.711_555_568_743_487_578_15e-5,
    2.010_334_399_292_288_132_65e-7,
];
const FAR_DEN: [f64; 8] = [
    1.0,
    5.998_322_065_558_879_376_9e-1,
    1.369_298_809_227_358_053_1e-1,
    1.487_536_129_085_061_485_25e-2,
    7.868_691_311_456_132_591e-4,
    1.846_318_317_510_054_681_8e-5,
    1.421_511_758_316_445_888_7e-7,
    2.044_263_103_389_939_785_64e-15,
];

/// Horner evaluation of a polynomial given lowest degree first.
fn poly(coef: &[f64; 8], x: f64) -> f64 {
    coef.iter().rev().fold(0.0, |acc, &c| acc * x + c)
}

/// The z with Φ(z) = p. Returns −∞ / +∞ at p = 0 / 1 and NaN outside [0, 1].
pub fn inverse_normal_cdf(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        return q * poly(&CENTRE_NUM, r) / poly(&CENTRE_DEN, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    if tail == 0.0 {
        return if q < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    let r = (-tail.ln()).sqrt();
    let z = if r <= 5.0 {
        let r = r - 1.6;
        poly(&NEAR_NUM, r) / poly(&NEAR_DEN, r)
    } else {
        let r = r - 5.0;
        poly(&FAR_NUM, r) / poly(&FAR_DEN, r)
    };
    if q < 0.0 {
        -z
    } else {
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;
    use proptest::prelude::*;

    #[test]
    fn known_quantiles() {
        assert_eq!(inverse_normal_cdf(0.5), 0.0);
        let z975 = inverse_normal_cdf(0.975);
        assert!((z975 - 1.959_963_984_540_054).abs() < 1e-15, "{z975}");
        // Φ⁻¹(1e-10) = −6.361340902404056 (far-tail branch boundary region).
        let z = inverse_normal_cdf(1e-10);
        assert!((z + 6.361_340_902_404_056).abs() < 1e-13, "{z}");
        assert_eq!(inverse_normal_cdf(0.0), f64::NEG_INFINITY);
        assert_eq!(inverse_normal_cdf(1.0), f64::INFINITY);
        assert!(inverse_normal_cdf(1.5).is_nan());
    }

    #[test]
    fn antisymmetric() {
        // Dyadic p so that 1 − p is exact.
        for k in 2..40 {
            let p = 0.5f64.powi(k);
            assert_eq!(inverse_normal_cdf(p), -inverse_normal_cdf(1.0 - p), "p={p}");
        }
    }

    proptest! {
        /// Φ(Φ⁻¹(p)) = p to near machine precision, in the centre and both tail
        /// branches (the lower tail is where p is representable finely).
        #[test]
        fn round_trips_through_cdf(e in -300.0f64..-0.302) {
            let p = 10f64.powf(e);
            let z = inverse_normal_cdf(p);
            let back = Family::Gaussian.cdf(z);
            // d p / p = z φ/Φ dz; allow a few ulps of z amplified by that factor.
            let tol = 1e-14 * (1.0 + z.abs() * z.abs());
            prop_assert!((back / p - 1.0).abs() < tol, "p={p} z={z} back={back}");
        }
    }
}
