//! The built-in demo feed, for a core with no feed configured: generated pictures of
//! imaginary planets written as PNG files, and a feed document in the NASA format (see
//! [`crate::feed`]) whose items point at them under a base URL that HQ serves.
//!
//! Everything is deterministic: picture `n` is the same bytes on every run and every
//! machine (for one version of the PNG encoder), so a restarted core finds its files
//! already there and the assets keep their hashes.
//!
//! IO: creates the directory it is given and writes the pictures into it.

use std::fs;
use std::io;
use std::path::Path;

use serde_json::{Value, json};

/// Pictures in the demo feed unless the caller asks for another number.
pub const DEFAULT_COUNT: usize = 24;

/// Width of each picture, in pixels.
pub const WIDTH: u32 = 640;

/// Height of each picture, in pixels.
pub const HEIGHT: u32 = 400;

/// The `center` of every demo item.
pub const CENTER: &str = "Tether demo";

/// The demo feed: its document and the files it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoFeed {
    /// The feed document (NASA Image and Video Library format, JSON).
    pub document: Vec<u8>,
    /// The file names written into the directory, in feed order (`tether-demo-0001.png`).
    pub files: Vec<String>,
}

/// Writes `count` demo pictures into `dir` (created if missing) and returns a feed
/// document whose item `n` has nasa_id `TETHER-DEMO-000n` and links to
/// `{base_url}/tether-demo-000n.png`.
///
/// A file that already holds the right bytes is left alone; any other is replaced
/// (written beside it, then renamed into place, so that a reader never sees half a
/// picture).
pub fn generate(dir: &Path, base_url: &str, count: usize) -> io::Result<DemoFeed> {
    fs::create_dir_all(dir)?;
    let base_url = base_url.trim_end_matches('/');
    let mut items = Vec::with_capacity(count);
    let mut files = Vec::with_capacity(count);
    for index in 0..count {
        let number = index + 1;
        let file = format!("tether-demo-{number:04}.png");
        let bytes = picture(index)?;
        write_if_changed(dir, &file, &bytes)?;
        items.push(item(index, &format!("{base_url}/{file}")));
        files.push(file);
    }
    let document = json!({
        "collection": {
            "version": "1.0",
            "href": base_url,
            "items": items,
            "metadata": {"total_hits": count},
        }
    });
    let document = serde_json::to_vec_pretty(&document).map_err(io::Error::other)?;
    Ok(DemoFeed { document, files })
}

fn write_if_changed(dir: &Path, file: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(file);
    match fs::read(&path) {
        Ok(existing) if existing == bytes => return Ok(()),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let partial = dir.join(format!(".{file}.partial"));
    fs::write(&partial, bytes)?;
    fs::rename(&partial, &path)
}

/// The imaginary bodies the pictures show, one per item in turn.
const BODIES: [&str; 12] = [
    "Ares", "Boreas", "Cetus", "Draco", "Eos", "Fornax", "Gaia", "Hydra", "Ixion", "Juno", "Kore",
    "Lyra",
];

/// What each picture shows of its body, in turn (coprime with the bodies' count, so the
/// pairs repeat only after 60 items).
const VIEWS: [(&str, &str); 5] = [
    ("approach view", "approach"),
    ("terminator at dawn", "terminator"),
    ("ring plane crossing", "rings"),
    ("southern storm bands", "storms"),
    ("limb and star field", "limb"),
];

/// The feed item of picture `index`.
fn item(index: usize, href: &str) -> Value {
    let number = index + 1;
    let body = BODIES[index % BODIES.len()];
    let (view, keyword) = VIEWS[index % VIEWS.len()];
    json!({
        "href": href,
        "data": [{
            "nasa_id": format!("TETHER-DEMO-{number:04}"),
            "title": format!("{body}, {view} (demo {number})"),
            "description": format!(
                "Synthetic image {number} of the Tether demo feed: the imaginary world {body}, \
                 {view}. Generated on HQ and served by it, so that the mission pipeline \
                 downloads, broadcasts and delivers a real file."
            ),
            "date_created": date(index),
            "keywords": ["Tether demo", "synthetic", body, keyword],
            "center": CENTER,
            "media_type": "image",
        }],
        "links": [{"href": href, "rel": "canonical", "render": "image"}],
    })
}

/// The creation date of item `index`: one a day from 2024-01-01, at noon UTC (RFC 3339).
fn date(index: usize) -> String {
    let (year, month, day) = protocol::calendar::civil_from_days(19_723 + index as u64); // 2024-01-01
    format!("{year:04}-{month:02}-{day:02}T12:00:00Z")
}

/// A small deterministic generator (xorshift64*), so pictures need no RNG crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Spread the seed so that neighbouring indexes start far apart; never zero.
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A float in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A float in [lo, hi).
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

/// An RGB colour from a hue in [0, 1) at full saturation and value `v`.
fn hue(h: f32, v: f32) -> [f32; 3] {
    let channel = |offset: f32| {
        let k = (h * 6.0 + offset) % 6.0;
        v * (1.0 - (k.min(4.0 - k).clamp(0.0, 1.0)) * 0.75)
    };
    [channel(5.0), channel(3.0), channel(1.0)]
}

/// Picture `index` as PNG bytes: a sky gradient, stars, a shaded planet with bands and
/// maybe a ring, the item number in the corner, and a little grain.
fn picture(index: usize) -> io::Result<Vec<u8>> {
    let mut rng = Rng::new(index as u64 + 1);
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut rgb = vec![0f32; w * h * 3];

    // The sky: a vertical gradient between two dark colours of the picture's hue.
    let base_hue = (index as f32 * 0.618_034) % 1.0;
    let top = hue(base_hue, 0.10);
    let bottom = hue((base_hue + 0.5) % 1.0, 0.28);
    for y in 0..h {
        let t = y as f32 / h as f32;
        for x in 0..w {
            let p = (y * w + x) * 3;
            for c in 0..3 {
                rgb[p + c] = top[c] * (1.0 - t) + bottom[c] * t;
            }
        }
    }

    // Stars.
    for _ in 0..160 {
        let x = rng.range(0.0, w as f32) as usize;
        let y = rng.range(0.0, h as f32) as usize;
        let bright = rng.range(0.5, 1.0);
        let p = (y * w + x) * 3;
        rgb[p..p + 3].fill(bright);
    }

    // The planet: a disc lit from one side, with bands of a second colour.
    let cx = rng.range(0.25, 0.75) * w as f32;
    let cy = rng.range(0.3, 0.7) * h as f32;
    let radius = rng.range(70.0, 170.0);
    let planet = hue((base_hue + rng.range(0.1, 0.9)) % 1.0, 0.95);
    let band = hue(rng.unit(), 0.7);
    let bands = rng.range(3.0, 12.0);
    let tilt = rng.range(-0.5, 0.5);
    let light = (rng.range(-1.0, 1.0), rng.range(-1.0, -0.2));
    let ringed = index % VIEWS.len() == 2 || rng.unit() < 0.3;
    let ring_color = hue(rng.unit(), 0.9);
    for y in 0..h {
        for x in 0..w {
            let dx = (x as f32 - cx) / radius;
            let dy = (y as f32 - cy) / radius;
            let p = (y * w + x) * 3;
            let d2 = dx * dx + dy * dy;
            if d2 <= 1.0 {
                let dz = (1.0 - d2).sqrt();
                let lit = (dx * light.0 + dy * light.1 + dz * 0.6).clamp(0.04, 1.0);
                let stripe = ((dy + dx * tilt) * bands * std::f32::consts::PI).sin();
                let mix = 0.5 + 0.5 * stripe;
                for c in 0..3 {
                    rgb[p + c] = (planet[c] * mix + band[c] * (1.0 - mix)) * lit;
                }
            }
            // The ring, an elliptic band around the planet: its far half is hidden by the
            // disc, its near half (below the planet's centre line) crosses it.
            let (rx, ry) = (dx / 2.1, (dy + dx * tilt * 0.3) / 0.45);
            let r = (rx * rx + ry * ry).sqrt();
            let visible = d2 > 1.0 || ry > 0.0;
            if ringed && visible && (0.62..0.95).contains(&r) {
                let alpha = 0.55 * (1.0 - ((r - 0.78) / 0.17).abs());
                for c in 0..3 {
                    rgb[p + c] = rgb[p + c] * (1.0 - alpha) + ring_color[c] * alpha;
                }
            }
        }
    }

    draw_number(&mut rgb, w, index + 1);

    // Grain: a little noise, as a real sensor has (and so the file has a real size).
    // One grain value per pixel, not per channel: grey grain, as film has.
    let mut bytes = Vec::with_capacity(w * h * 3);
    for pixel in rgb.chunks_exact(3) {
        let grain = match rng.next() % 16 {
            0 => -1.5,
            1 => 1.5,
            _ => 0.0,
        };
        for value in pixel {
            bytes.push((value * 255.0 + grain).clamp(0.0, 255.0) as u8);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Balanced);
    let mut writer = encoder.write_header().map_err(io::Error::other)?;
    writer.write_image_data(&bytes).map_err(io::Error::other)?;
    writer.finish().map_err(io::Error::other)?;
    Ok(out)
}

/// Draws `number` (4 digits) in seven-segment style in the top-left corner.
fn draw_number(rgb: &mut [f32], w: usize, number: usize) {
    // Segments a..g of each digit, as bits 0..6.
    const DIGITS: [u8; 10] = [0x3f, 0x06, 0x5b, 0x4f, 0x66, 0x6d, 0x7d, 0x07, 0x7f, 0x6f];
    // Each segment as a rectangle (x, y, width, height) in a 12x22 digit cell.
    const SEGMENTS: [(usize, usize, usize, usize); 7] = [
        (2, 0, 8, 2),
        (10, 2, 2, 8),
        (10, 12, 2, 8),
        (2, 20, 8, 2),
        (0, 12, 2, 8),
        (0, 2, 2, 8),
        (2, 10, 8, 2),
    ];
    let text = format!("{:04}", number % 10_000);
    for (i, digit) in text.bytes().enumerate() {
        let bits = DIGITS[usize::from(digit - b'0')];
        let left = 16 + i * 18;
        for (s, &(x, y, sw, sh)) in SEGMENTS.iter().enumerate() {
            if bits & (1 << s) == 0 {
                continue;
            }
            for yy in 16 + y..16 + y + sh {
                for xx in left + x..left + x + sw {
                    let p = (yy * w + xx) * 3;
                    rgb[p..p + 3].copy_from_slice(&[0.95, 0.9, 0.6]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::SystemTime;

    use super::*;
    use crate::feed;

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("tether-demo-feed-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn modified(path: &Path) -> SystemTime {
        fs::metadata(path).unwrap().modified().unwrap()
    }

    #[test]
    fn the_feed_parses_and_points_at_its_pictures() {
        let dir = TempDir::new("parse");
        let demo = generate(&dir.0.join("images"), "http://127.0.0.1:8080/demo/", 6).unwrap();
        let parsed = feed::parse(&demo.document).unwrap();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.items.len(), 6);
        assert_eq!(demo.files.len(), 6);
        for (n, (item, file)) in parsed.items.iter().zip(&demo.files).enumerate() {
            let number = n + 1;
            assert_eq!(item.nasa_id, format!("TETHER-DEMO-{number:04}"));
            assert_eq!(item.id, item.nasa_id, "demo ids need no cleaning");
            assert_eq!(file, &format!("tether-demo-{number:04}.png"));
            assert_eq!(item.href, format!("http://127.0.0.1:8080/demo/{file}"));
            assert_eq!(item.center, CENTER);
            assert!(item.keywords.contains(&"Tether demo".to_owned()));
            assert!(!item.description.is_empty());
        }
        assert_eq!(parsed.items[0].date_created, "2024-01-01T12:00:00Z");
        assert_eq!(parsed.items[5].date_created, "2024-01-06T12:00:00Z");
    }

    #[test]
    fn pictures_are_distinct_images_of_a_useful_size() {
        let dir = TempDir::new("pictures");
        let demo = generate(&dir.0, "file:///nowhere", 5).unwrap();
        let mut previews = Vec::new();
        for file in &demo.files {
            let bytes = fs::read(dir.0.join(file)).unwrap();
            let info = crate::image::inspect(&bytes).unwrap();
            assert_eq!(
                (info.format, info.width, info.height),
                ("png", WIDTH, HEIGHT)
            );
            let kib = bytes.len() / 1024;
            eprintln!("{file}: {kib} KiB, preview {}", info.preview);
            assert!((40..=200).contains(&kib), "{file}: {kib} KiB");
            previews.push(info.preview);
        }
        previews.sort();
        previews.dedup();
        assert_eq!(previews.len(), 5, "each picture looks different");
    }

    #[test]
    fn generating_again_leaves_identical_files_alone() {
        let dir = TempDir::new("again");
        let first = generate(&dir.0, "http://h", 3).unwrap();
        let path = dir.0.join(&first.files[1]);
        let before = modified(&path);
        let other = dir.0.join(&first.files[2]);
        fs::write(&other, b"not the picture").unwrap();
        let second = generate(&dir.0, "http://h", 3).unwrap();
        assert_eq!(first, second, "same document and files");
        assert_eq!(
            modified(&path),
            before,
            "an identical file is not rewritten"
        );
        let repaired = fs::read(&other).unwrap();
        assert!(
            crate::image::inspect(&repaired).is_ok(),
            "a changed file is replaced"
        );
        let mut names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, first.files, "no partial files left");
    }

    #[test]
    fn pictures_are_deterministic() {
        assert_eq!(picture(7).unwrap(), picture(7).unwrap());
        assert_ne!(picture(7).unwrap(), picture(8).unwrap());
    }

    #[test]
    fn dates_count_days_across_months_and_years() {
        assert_eq!(date(0), "2024-01-01T12:00:00Z");
        assert_eq!(date(31), "2024-02-01T12:00:00Z");
        assert_eq!(date(59), "2024-02-29T12:00:00Z");
        assert_eq!(date(366), "2025-01-01T12:00:00Z");
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_an_error() {
        let dir = TempDir::new("blocked");
        fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("file");
        fs::write(&file, b"x").unwrap();
        assert!(generate(&file.join("sub"), "http://h", 1).is_err());
    }

    #[test]
    fn zero_items_is_an_empty_feed() {
        let dir = TempDir::new("zero");
        let demo = generate(&dir.0, "http://h", 0).unwrap();
        assert!(demo.files.is_empty());
        assert_eq!(
            feed::parse(&demo.document).unwrap(),
            feed::Parsed::default()
        );
    }
}
