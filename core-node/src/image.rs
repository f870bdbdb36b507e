//! Checking that downloaded bytes are an image, and its preview: format, size and a
//! ThumbHash (a blurred picture of a few dozen bytes) that the broadcast carries so that
//! a field team sees roughly what an image shows before it asks for the file.
//!
//! [`inspect`] guesses the format from the first bytes (never from a name or a
//! `Content-Type`), decodes within limits, shrinks the picture to at most 100x100 and
//! hashes that. Bytes that are no image are described ("HTML text", "a PDF document"), so
//! that a failed download says what the server sent instead.
//!
//! IO: none.

use std::io::Cursor;

use base64::Engine as _;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Widest and tallest image accepted, in pixels.
pub const MAX_SIDE: u32 = 20_000;

/// Most memory a decode may take, in bytes: the decoded pixels (a 6000x4000 RGB photo
/// takes 72 MB) plus the decoder's own buffers.
pub const MAX_ALLOC: u64 = 512 * 1024 * 1024;

/// The longest side of the picture that is hashed. ThumbHash takes at most 100x100.
const PREVIEW_SIDE: u32 = 100;

/// The formats [`inspect`] decodes, as named in [`ImageInfo::format`].
pub const FORMATS: [&str; 2] = ["png", "jpeg"];

/// What [`inspect`] found out about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// One of [`FORMATS`]: `png`, `jpeg`.
    pub format: &'static str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The ThumbHash of the picture, standard base64 with padding (about 30 to 40
    /// characters). Decode it with any ThumbHash library to a blurred placeholder; it
    /// also gives the aspect ratio and the average colour.
    pub preview: String,
}

/// Why bytes were not accepted as an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not an image; the text says what they look like ("HTML text").
    #[error("not an image: {0}")]
    NotAnImage(String),
    /// An image in a format that is not decoded here (see [`FORMATS`]).
    #[error("{0} images are not supported (only png and jpeg)")]
    Unsupported(&'static str),
    /// It starts as an image but cannot be decoded: truncated or corrupt.
    #[error("damaged image: {0}")]
    Damaged(String),
    /// Larger than [`MAX_SIDE`] on a side, or would take more than [`MAX_ALLOC`] to decode.
    #[error(
        "image too large: {width}x{height} pixels (at most {MAX_SIDE} a side and {MAX_ALLOC} bytes decoded)"
    )]
    TooLarge {
        /// Width in pixels, as the image's header says.
        width: u32,
        /// Height in pixels, as the image's header says.
        height: u32,
    },
}

/// Checks that `bytes` are an image in one of [`FORMATS`], decodes it within the limits
/// and makes its preview.
pub fn inspect(bytes: &[u8]) -> Result<ImageInfo, ImageError> {
    let pixels = match sniff(bytes) {
        Sniffed::Png => decode_png(bytes)?,
        Sniffed::Jpeg => decode_jpeg(bytes)?,
        Sniffed::OtherImage(name) => return Err(ImageError::Unsupported(name)),
        Sniffed::NotAnImage(what) => return Err(ImageError::NotAnImage(what)),
    };
    Ok(ImageInfo {
        format: pixels.format,
        width: pixels.width,
        height: pixels.height,
        preview: preview(&pixels),
    })
}

/// The usual file extension for a format named by [`ImageInfo::format`]; `bin` for
/// anything else.
pub fn extension(format: &str) -> &'static str {
    match format {
        "png" => "png",
        "jpeg" => "jpg",
        "gif" => "gif",
        "webp" => "webp",
        _ => "bin",
    }
}

/// A decoded picture: 8-bit samples, row by row, `channels` a pixel (1 grey, 2 grey and
/// alpha, 3 RGB, 4 RGBA).
struct Pixels {
    format: &'static str,
    width: u32,
    height: u32,
    channels: usize,
    samples: Vec<u8>,
}

/// Checks the size a header announces, before anything is allocated for the pixels.
fn check_size(width: u32, height: u32, bytes_per_pixel: u64) -> Result<(), ImageError> {
    let decoded = u64::from(width) * u64::from(height) * bytes_per_pixel;
    if width > MAX_SIDE || height > MAX_SIDE || decoded > MAX_ALLOC {
        return Err(ImageError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Damaged(format!("{width}x{height} pixels")));
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> Result<Pixels, ImageError> {
    let damaged = |err: png::DecodingError| ImageError::Damaged(format!("png: {err}"));
    // The PNG decoder's own limit counts what it allocates besides the output buffer.
    let limits = png::Limits {
        bytes: usize::try_from(MAX_ALLOC).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    // Palette to RGB, tRNS to alpha, 16-bit and low bit depths to 8-bit.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(damaged)?;
    let (width, height) = (reader.info().width, reader.info().height);
    // At most 4 bytes a pixel once normalized (RGBA, 8-bit).
    check_size(width, height, 4)?;
    let size = reader
        .output_buffer_size()
        .ok_or(ImageError::TooLarge { width, height })?;
    let mut samples = vec![0; size];
    let frame = reader.next_frame(&mut samples).map_err(|err| match err {
        png::DecodingError::LimitsExceeded => ImageError::TooLarge { width, height },
        other => damaged(other),
    })?;
    samples.truncate(frame.buffer_size());
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(ImageError::Damaged("png: palette not expanded".to_owned()));
        }
    };
    if frame.bit_depth != png::BitDepth::Eight || frame.line_size != width as usize * channels {
        return Err(ImageError::Damaged(
            "png: unexpected sample layout".to_owned(),
        ));
    }
    Ok(Pixels {
        format: "png",
        width,
        height,
        channels,
        samples,
    })
}

fn decode_jpeg(bytes: &[u8]) -> Result<Pixels, ImageError> {
    let damaged =
        |err: zune_jpeg::errors::DecodeErrors| ImageError::Damaged(format!("jpeg: {err}"));
    // The decoder's own size limits are left at the format's maximum so that the header
    // is read and the error below can name the size.
    let options = DecoderOptions::default()
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(damaged)?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| ImageError::Damaged("jpeg: no frame header".to_owned()))?;
    let (width, height) = (
        u32::try_from(width).unwrap_or(u32::MAX),
        u32::try_from(height).unwrap_or(u32::MAX),
    );
    // A progressive JPEG is decoded through its coefficients, all kept until the last
    // scan: two bytes a sample of each component (without subsampling; fewer with it),
    // besides the RGB output. A baseline one is decoded a row of blocks at a time.
    let per_pixel = match decoder.info() {
        Some(info) if info.sof.is_progressive() => 3 + 2 * u64::from(info.components),
        _ => 3,
    };
    check_size(width, height, per_pixel)?;
    // Every 8x8 block of the picture costs at least one bit of coded data (the Huffman
    // code of its DC coefficient, in baseline and progressive JPEGs alike): fewer bytes
    // than that are a file cut far short of its picture. The decoder would fill what is
    // missing with grey, which for a few hundred bytes claiming 13000x13000 pixels is
    // seconds of work and hundreds of megabytes.
    let blocks = u64::from(width.div_ceil(8)) * u64::from(height.div_ceil(8));
    if (bytes.len() as u64).saturating_mul(8) < blocks {
        return Err(ImageError::Damaged(format!(
            "jpeg: {} bytes are too few for {width}x{height} pixels (cut short)",
            bytes.len()
        )));
    }
    let samples = decoder.decode().map_err(damaged)?;
    let channels = decoder
        .output_colorspace()
        .map_or(3, |space| space.num_components());
    if samples.len() != width as usize * height as usize * channels {
        return Err(ImageError::Damaged(
            "jpeg: unexpected sample layout".to_owned(),
        ));
    }
    Ok(Pixels {
        format: "jpeg",
        width,
        height,
        channels,
        samples,
    })
}

/// The ThumbHash of `pixels`, base64.
fn preview(pixels: &Pixels) -> String {
    let (w, h, rgba) = shrink(pixels);
    let hash = thumbhash::rgba_to_thumb_hash(w, h, &rgba);
    base64::engine::general_purpose::STANDARD.encode(hash)
}

/// `pixels` shrunk to at most [`PREVIEW_SIDE`] a side, aspect kept, as RGBA: each
/// pixel of the result is the average of the block of pixels it covers.
fn shrink(pixels: &Pixels) -> (usize, usize, Vec<u8>) {
    let (width, height) = (pixels.width as usize, pixels.height as usize);
    let side = PREVIEW_SIDE as usize;
    let (w, h) = if width.max(height) <= side {
        (width, height)
    } else if width >= height {
        (side, (height * side).div_ceil(width).max(1))
    } else {
        ((width * side).div_ceil(height).max(1), side)
    };
    // Target column of each source column, and sums of R, G, B, A and count per target.
    let columns: Vec<usize> = (0..width).map(|x| x * w / width).collect();
    let mut sums = vec![[0u64; 5]; w * h];
    let channels = pixels.channels;
    for (y, row) in pixels.samples.chunks_exact(width * channels).enumerate() {
        let target = &mut sums[(y * h / height) * w..][..w];
        for (pixel, &x) in row.chunks_exact(channels).zip(&columns) {
            let [r, g, b, a] = match *pixel {
                [v] => [v, v, v, 255],
                [v, a] => [v, v, v, a],
                [r, g, b] => [r, g, b, 255],
                [r, g, b, a, ..] => [r, g, b, a],
                [] => [0, 0, 0, 0],
            };
            let sum = &mut target[x];
            sum[0] += u64::from(r);
            sum[1] += u64::from(g);
            sum[2] += u64::from(b);
            sum[3] += u64::from(a);
            sum[4] += 1;
        }
    }
    let rgba = sums
        .iter()
        .flat_map(|sum| {
            let n = sum[4].max(1);
            // An average of bytes fits in a byte.
            [0, 1, 2, 3].map(|c| u8::try_from(sum[c] / n).unwrap_or(u8::MAX))
        })
        .collect();
    (w, h, rgba)
}

/// What the first bytes of a download say it is.
#[derive(Debug, PartialEq)]
enum Sniffed {
    Png,
    Jpeg,
    /// An image format recognised but not decoded here.
    OtherImage(&'static str),
    /// Not an image: a description of what it looks like.
    NotAnImage(String),
}

fn sniff(bytes: &[u8]) -> Sniffed {
    let image = |name| Sniffed::OtherImage(name);
    match bytes {
        [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', ..] => Sniffed::Png,
        [0xff, 0xd8, 0xff, ..] => Sniffed::Jpeg,
        [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => image("gif"),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => image("webp"),
        [b'I', b'I', b'*', 0, ..] | [b'M', b'M', 0, b'*', ..] => image("tiff"),
        [b'B', b'M', ..] if bytes.len() >= 26 => image("bmp"),
        [0, 0, 1, 0, ..] => image("ico"),
        [b'q', b'o', b'i', b'f', ..] => image("qoi"),
        [b'8', b'B', b'P', b'S', ..] => image("psd"),
        [0xff, 0x0a, ..] | [0, 0, 0, 0x0c, b'J', b'X', b'L', b' ', ..] => image("jxl"),
        [_, _, _, _, b'f', b't', b'y', b'p', brand @ ..] if brand.starts_with(b"avif") => {
            image("avif")
        }
        [_, _, _, _, b'f', b't', b'y', b'p', brand @ ..]
            if brand.starts_with(b"heic") || brand.starts_with(b"mif1") =>
        {
            image("heic")
        }
        _ => Sniffed::NotAnImage(describe(bytes)),
    }
}

/// What bytes that are no image look like, for an error message.
fn describe(bytes: &[u8]) -> String {
    let start = &bytes[..bytes.len().min(1024)];
    let text = start.strip_prefix(b"\xef\xbb\xbf").unwrap_or(start);
    let text = text.trim_ascii_start();
    let lower = text[..text.len().min(64)].to_ascii_lowercase();
    let what = if bytes.is_empty() {
        "empty"
    } else if lower.starts_with(b"<!doctype html")
        || lower.starts_with(b"<html")
        || lower.starts_with(b"<head")
        || lower.starts_with(b"<body")
    {
        "HTML text"
    } else if lower.starts_with(b"<svg")
        || (lower.starts_with(b"<?xml") && text.windows(4).any(|w| w == b"<svg"))
    {
        "SVG text (a vector drawing)"
    } else if lower.starts_with(b"<?xml") {
        "XML text"
    } else if lower.starts_with(b"{") || lower.starts_with(b"[") {
        "JSON text"
    } else if bytes.starts_with(b"%PDF") {
        "a PDF document"
    } else if bytes.starts_with(b"PK\x03\x04") {
        "a ZIP archive"
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        "gzip data"
    } else if is_text(start) {
        "text"
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return format!("binary data starting with {}", head.join(" "));
    };
    what.to_owned()
}

/// True if `start` reads as UTF-8 text (a character cut at the end is allowed).
fn is_text(start: &[u8]) -> bool {
    let valid = match std::str::from_utf8(start) {
        Ok(s) => s,
        Err(err) if err.error_len().is_none() => {
            // Only the last character is incomplete: the cut, not the content.
            std::str::from_utf8(&start[..err.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n'))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A `width`x`height` RGB picture: a red-to-blue gradient, plus noise below `noise`.
    fn picture(width: u32, height: u32, noise: u8) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            for x in 0..width {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let n = if noise == 0 {
                    0
                } else {
                    (state % u32::from(noise)) as u8
                };
                let r = (x * 255 / width) as u8;
                let b = (y * 255 / height) as u8;
                rgb.extend([
                    r.saturating_add(n),
                    64u8.saturating_add(n),
                    b.saturating_add(n),
                ]);
            }
        }
        rgb
    }

    fn png_of(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
        png_with(width, height, color, depth, data, |_| {})
    }

    fn png_with(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
        setup: impl FnOnce(&mut png::Encoder<'_, &mut Vec<u8>>),
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        setup(&mut encoder);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    fn png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
        png_of(
            width,
            height,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            rgb,
        )
    }

    fn jpeg(width: u32, height: u32, rgb: &[u8], quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, quality)
            .encode(
                rgb,
                width as u16,
                height as u16,
                jpeg_encoder::ColorType::Rgb,
            )
            .unwrap();
        out
    }

    fn decode_preview(preview: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(preview)
            .unwrap()
    }

    #[test]
    fn a_png_is_inspected() {
        let info = inspect(&png(64, 48, &picture(64, 48, 0))).unwrap();
        assert_eq!((info.format, info.width, info.height), ("png", 64, 48));
        let hash = decode_preview(&info.preview);
        assert!((5..=40).contains(&hash.len()), "{} bytes", hash.len());
        // ThumbHash keeps the aspect ratio: 64x48 is 4:3.
        let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).unwrap();
        assert!((ratio - 4.0 / 3.0).abs() < 0.1, "{ratio}");
    }

    #[test]
    fn a_jpeg_is_inspected() {
        let info = inspect(&jpeg(300, 500, &picture(300, 500, 8), 85)).unwrap();
        assert_eq!((info.format, info.width, info.height), ("jpeg", 300, 500));
        assert!(info.preview.len() < 64, "{}", info.preview);
        let hash = decode_preview(&info.preview);
        let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).unwrap();
        assert!((ratio - 0.6).abs() < 0.1, "{ratio}");
    }

    #[test]
    fn previews_show_the_picture() {
        let rgb = picture(80, 80, 0);
        let a = inspect(&png(80, 80, &rgb)).unwrap().preview;
        assert_eq!(
            a,
            inspect(&png(80, 80, &rgb)).unwrap().preview,
            "deterministic"
        );
        let flipped: Vec<u8> = rgb
            .chunks_exact(80 * 3)
            .flat_map(|row| row.chunks_exact(3).rev().flatten().copied())
            .collect();
        assert_ne!(a, inspect(&png(80, 80, &flipped)).unwrap().preview);
        // A red picture's preview averages to red.
        let red: Vec<u8> = [200, 10, 10].repeat(300 * 200);
        let hash = decode_preview(&inspect(&jpeg(300, 200, &red, 90)).unwrap().preview);
        let (r, g, b, _) = thumbhash::thumb_hash_to_average_rgba(&hash).unwrap();
        assert!(r > 0.6 && g < 0.2 && b < 0.2, "{r} {g} {b}");
    }

    #[test]
    fn every_png_colour_type_is_inspected() {
        use png::{BitDepth, ColorType};
        let grey: Vec<u8> = (0..30 * 20).map(|i| (i % 256) as u8).collect();
        let bytes = png_of(30, 20, ColorType::Grayscale, BitDepth::Eight, &grey);
        assert_eq!(inspect(&bytes).unwrap().width, 30);
        let grey_alpha = [128, 255].repeat(10 * 10);
        let bytes = png_of(
            10,
            10,
            ColorType::GrayscaleAlpha,
            BitDepth::Eight,
            &grey_alpha,
        );
        assert_eq!(inspect(&bytes).unwrap().height, 10);
        let clear = [0u8; 10 * 10 * 4];
        let bytes = png_of(10, 10, ColorType::Rgba, BitDepth::Eight, &clear);
        assert!(inspect(&bytes).is_ok());
        let deep = [0x12u8, 0x34].repeat(5 * 7 * 3);
        let bytes = png_of(5, 7, ColorType::Rgb, BitDepth::Sixteen, &deep);
        assert_eq!(inspect(&bytes).unwrap().width, 5);
        let one_bit = [0b1010_1010u8; 2 * 16];
        let bytes = png_of(16, 16, ColorType::Grayscale, BitDepth::One, &one_bit);
        assert_eq!(inspect(&bytes).unwrap().width, 16);
        let indexes: Vec<u8> = (0..12 * 12).map(|i| (i % 3) as u8).collect();
        let bytes = png_with(12, 12, ColorType::Indexed, BitDepth::Eight, &indexes, |e| {
            e.set_palette(vec![255, 0, 0, 0, 255, 0, 0, 0, 255]);
            e.set_trns(vec![255, 128]);
        });
        assert_eq!(inspect(&bytes).unwrap().height, 12);
    }

    #[test]
    fn a_grey_jpeg_is_inspected() {
        let mut out = Vec::new();
        let luma: Vec<u8> = (0..64 * 32).map(|i| (i % 251) as u8).collect();
        jpeg_encoder::Encoder::new(&mut out, 80)
            .encode(&luma, 64, 32, jpeg_encoder::ColorType::Luma)
            .unwrap();
        let info = inspect(&out).unwrap();
        assert_eq!((info.width, info.height), (64, 32));
    }

    #[test]
    fn shrinking_keeps_the_aspect_and_averages() {
        let check = |width: u32, height: u32, expected: (usize, usize)| {
            let pixels = Pixels {
                format: "png",
                width,
                height,
                channels: 1,
                samples: vec![100; width as usize * height as usize],
            };
            let (w, h, rgba) = shrink(&pixels);
            assert_eq!((w, h), expected, "{width}x{height}");
            assert_eq!(rgba.len(), w * h * 4);
            assert!(rgba.chunks_exact(4).all(|p| p == [100, 100, 100, 255]));
        };
        check(1, 1, (1, 1));
        check(100, 40, (100, 40));
        check(4000, 3000, (100, 75));
        check(3000, 4000, (75, 100));
        check(20_000, 3, (100, 1));
        check(3, 20_000, (1, 100));
        check(201, 101, (100, 51));
    }

    #[test]
    fn what_is_not_an_image_is_described() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"", "not an image: empty"),
            (
                b"\n  <!DOCTYPE html><html><body>404</body></html>",
                "not an image: HTML text",
            ),
            (b"\xef\xbb\xbf<html>", "not an image: HTML text"),
            (
                b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
                "not an image: SVG text (a vector drawing)",
            ),
            (b"<?xml version=\"1.0\"?><feed/>", "not an image: XML text"),
            (b"{\"error\": \"nope\"}", "not an image: JSON text"),
            (b"%PDF-1.7\n...", "not an image: a PDF document"),
            (b"PK\x03\x04rest", "not an image: a ZIP archive"),
            (b"\x1f\x8b\x08\x00", "not an image: gzip data"),
            ("Access denied, désolé\n".as_bytes(), "not an image: text"),
            (
                b"\x00\x01\x02\x03\x04\x05\x06\x07\x08",
                "not an image: binary data starting with 00 01 02 03 04 05 06 07",
            ),
            (
                b"GIF89a\x01\x00",
                "gif images are not supported (only png and jpeg)",
            ),
            (
                b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                "webp images are not supported (only png and jpeg)",
            ),
            (
                b"II*\x00rest",
                "tiff images are not supported (only png and jpeg)",
            ),
            (
                b"\x00\x00\x00\x1cftypavif",
                "avif images are not supported (only png and jpeg)",
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                inspect(bytes).unwrap_err().to_string(),
                expected,
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn text_cut_inside_a_character_is_still_text() {
        let mut long = "é".repeat(600).into_bytes();
        long.truncate(1025);
        assert_eq!(describe(&long), "text");
    }

    #[test]
    fn damaged_images_are_refused() {
        let whole = png(64, 64, &picture(64, 64, 16));
        let truncated = &whole[..whole.len() / 2];
        assert!(
            matches!(inspect(truncated), Err(ImageError::Damaged(_))),
            "{:?}",
            inspect(truncated)
        );
        let mut corrupt = whole.clone();
        for b in &mut corrupt[60..200] {
            *b ^= 0x5a;
        }
        assert!(matches!(inspect(&corrupt), Err(ImageError::Damaged(_))));
        // Only the signature: no header at all.
        let signature = &whole[..8];
        assert!(matches!(inspect(signature), Err(ImageError::Damaged(_))));
        let jpeg_start = [0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F'];
        let err = inspect(&jpeg_start).unwrap_err();
        assert!(matches!(err, ImageError::Damaged(_)), "{err}");
        assert!(
            err.to_string().starts_with("damaged image: jpeg: "),
            "{err}"
        );
    }

    /// A PNG header claiming `width`x`height`, with one empty IDAT chunk.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let crc = crc32(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        let mut header = Vec::new();
        header.extend_from_slice(&width.to_be_bytes());
        header.extend_from_slice(&height.to_be_bytes());
        header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut out, b"IHDR", &header);
        chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0, 0, 0, 0, 1]);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_huge_image_is_refused_before_decoding() {
        let err = inspect(&png_claiming(30_000, 10)).unwrap_err();
        assert_eq!(
            err,
            ImageError::TooLarge {
                width: 30_000,
                height: 10
            }
        );
        // Within the side limit, but 20000 x 20000 x 3 bytes is over the memory limit.
        let err = inspect(&png_claiming(20_000, 20_000)).unwrap_err();
        assert_eq!(
            err,
            ImageError::TooLarge {
                width: 20_000,
                height: 20_000
            }
        );
        assert!(
            err.to_string()
                .starts_with("image too large: 20000x20000 pixels")
        );
        // A plausible header with no pixel data is damaged, not too large.
        let err = inspect(&png_claiming(100, 100)).unwrap_err();
        assert!(matches!(err, ImageError::Damaged(_)), "{err}");
    }

    /// A real JPEG whose frame header is changed to claim `width`x`height`.
    fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = jpeg(8, 8, &picture(8, 8, 0), 80);
        let sof = bytes.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        bytes
    }

    #[test]
    fn a_huge_jpeg_is_refused_before_decoding() {
        let err = inspect(&jpeg_claiming(30_000, 8)).unwrap_err();
        assert_eq!(
            err,
            ImageError::TooLarge {
                width: 30_000,
                height: 8
            }
        );
        let err = inspect(&jpeg_claiming(20_000, 20_000)).unwrap_err();
        assert_eq!(
            err,
            ImageError::TooLarge {
                width: 20_000,
                height: 20_000
            }
        );
    }

    #[test]
    fn a_jpeg_far_too_short_for_its_size_is_damaged() {
        // Found by probing the image fuzz target: 709 bytes claiming 13000x13000 pixels
        // took 24 s and 540 MB in the fuzz build, decoded as grey fill.
        let err = inspect(&jpeg_claiming(13_000, 13_000)).unwrap_err();
        assert!(
            err.to_string()
                .contains("too few for 13000x13000 pixels (cut short)"),
            "{err}"
        );
    }

    #[test]
    fn a_progressive_jpeg_counts_its_coefficients_in_the_memory_limit() {
        // 9000 x 9000 RGB output is 243 MB, within the limit as a baseline JPEG; the
        // progressive decoder also keeps 2 bytes a sample of each component: 729 MB.
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 80);
        encoder.set_progressive(true);
        encoder
            .encode(&picture(8, 8, 0), 8, 8, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let sof = bytes.windows(2).position(|w| w == [0xff, 0xc2]).unwrap();
        bytes[sof + 5..sof + 7].copy_from_slice(&9000u16.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&9000u16.to_be_bytes());
        let err = inspect(&bytes).unwrap_err();
        assert_eq!(
            err,
            ImageError::TooLarge {
                width: 9000,
                height: 9000
            }
        );
        let err = inspect(&jpeg_claiming(9000, 9000)).unwrap_err();
        assert!(matches!(err, ImageError::Damaged(_)), "{err}");
    }

    #[test]
    fn a_truncated_jpeg_is_damaged_or_partial() {
        // JPEG decoders, browsers' too, show what arrived of a cut file: grey below. Either
        // outcome is fine; what matters is no panic and the right size if accepted.
        let whole = jpeg(64, 64, &picture(64, 64, 16), 80);
        for cut in [whole.len() / 2, whole.len() - 2, 200] {
            match inspect(&whole[..cut]) {
                Ok(info) => assert_eq!((info.width, info.height), (64, 64)),
                Err(err) => assert!(matches!(err, ImageError::Damaged(_)), "{err}"),
            }
        }
    }

    #[test]
    fn extensions() {
        let got: Vec<_> = ["png", "jpeg", "gif", "webp", "tiff", ""]
            .into_iter()
            .map(extension)
            .collect();
        assert_eq!(got, ["png", "jpg", "gif", "webp", "bin", "bin"]);
        for format in FORMATS {
            assert_ne!(extension(format), "bin");
        }
    }

    /// Prints how long a photo-sized JPEG takes (run with `--nocapture`); only correctness
    /// is asserted, speed is measured elsewhere.
    #[test]
    fn a_large_jpeg_is_inspected() {
        let bytes = jpeg(4000, 3000, &picture(4000, 3000, 48), 90);
        let start = Instant::now();
        let info = inspect(&bytes).unwrap();
        let took = start.elapsed();
        eprintln!(
            "inspect: {:.1} MB jpeg, {}x{}: {took:.2?}",
            bytes.len() as f64 / 1e6,
            info.width,
            info.height
        );
        assert_eq!((info.width, info.height), (4000, 3000));
        assert!(bytes.len() > 4_000_000, "{} bytes", bytes.len());
    }
}
