//! Charts of runs over time: throughput (ops/s) and p99 latency (ms) per second, one line
//! per [`Report`], as SVG or PNG.
//!
//! # Text without system fonts
//! Plotters draws text through a font backend, and its usual ones (`ttf`: font-kit with
//! fontconfig/freetype; `ab_glyph`: a TrueType file registered at run time) need either
//! system libraries or a font file we would have to ship. Neither is needed here:
//! - SVG: the SVG backend writes text as `<text>` elements and leaves the glyphs to the
//!   viewer; plotters' built-in fallback only estimates text sizes for layout.
//! - PNG: plotters' fallback cannot rasterise glyphs (the bitmap backend would panic on the
//!   first label), so [`Font8x8`] wraps the bitmap backend and draws text itself from the
//!   8x8 bitmap font of the `font8x8` crate (MIT; the glyphs are public domain), scaled by
//!   whole pixels. Plain, but legible, tiny and the same on every machine. The image is
//!   encoded with the `png` crate rather than plotters' `image` encoder, which would bring
//!   in the whole `image` crate with JPEG and BMP codecs.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use super::stats::Report;

/// Width and height of the picture in pixels.
const SIZE: (u32, u32) = (1000, 720);

/// The font family (SVG viewers pick their sans-serif; the PNG has its bitmap font).
const FONT: &str = "sans-serif";
/// Size of labels, legends and axis descriptions: 8 px bitmap glyphs in the PNG, 14.5 px in
/// the SVG (plotters writes `size / 1.24`).
const TEXT_SIZE: u32 = 18;
/// Size of the chart captions: 16 px bitmap glyphs in the PNG.
const CAPTION_SIZE: u32 = 36;

/// Line colours (Tableau 10), one per report, repeating after ten.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws `reports`' timelines into `path`: throughput on top, p99 latency below, one line
/// per report labelled `system workload`. The format follows the extension, `.svg` or
/// `.png`.
///
/// # Errors
/// No report, another extension, or the file cannot be drawn or written.
pub fn plot(reports: &[Report], path: &Path) -> Result<()> {
    if reports.is_empty() {
        bail!("nothing to plot: no report");
    }
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            draw(&root, reports).map_err(|e| anyhow::anyhow!("drawing the SVG: {e}"))?;
            root.present().with_context(|| format!("writing {}", path.display()))?;
        }
        Some("png") => {
            let (width, height) = SIZE;
            let mut pixels = vec![0u8; 3 * width as usize * height as usize];
            {
                let backend = Font8x8 { inner: BitMapBackend::with_buffer(&mut pixels, SIZE) };
                let root = backend.into_drawing_area();
                draw(&root, reports).map_err(|e| anyhow::anyhow!("drawing the PNG: {e}"))?;
                root.present().map_err(|e| anyhow::anyhow!("drawing the PNG: {e}"))?;
            }
            write_png(path, &pixels, SIZE)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        _ => bail!("cannot tell the plot format of {}: name it *.svg or *.png", path.display()),
    }
    Ok(())
}

/// The line labels: `system workload`, with the client count where that alone would not
/// tell two reports apart.
fn labels(reports: &[Report]) -> Vec<String> {
    let plain: Vec<String> =
        reports.iter().map(|r| format!("{} {}", r.system, r.workload)).collect();
    plain
        .iter()
        .zip(reports)
        .map(|(label, report)| {
            if plain.iter().filter(|other| *other == label).count() > 1 {
                format!("{label} ({} clients)", report.clients)
            } else {
                label.clone()
            }
        })
        .collect()
}

/// Draws both charts on `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    reports: &[Report],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let areas = root.split_evenly((2, 1));
    let labels = labels(reports);
    let seconds = reports.iter().map(|r| r.timeline.len()).max().unwrap_or(0).max(2);
    let x_max = (seconds - 1) as f64;
    let throughput: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|r| r.timeline.iter().map(|s| (s.second as f64, s.ops as f64)).collect())
        .collect();
    let p99: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|r| r.timeline.iter().map(|s| (s.second as f64, s.p99_us as f64 / 1000.0)).collect())
        .collect();
    let charts = [
        ("throughput per second", "ops/s", &throughput),
        ("p99 latency per second", "p99 ms", &p99),
    ];
    for (area, (caption, unit, lines)) in areas.iter().zip(charts) {
        let y_max = lines.iter().flatten().map(|(_, y)| *y).fold(0.0, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, CAPTION_SIZE))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the start of measuring")
            .y_desc(unit)
            .label_style((FONT, TEXT_SIZE))
            .axis_desc_style((FONT, TEXT_SIZE))
            .draw()?;
        for (i, (line, label)) in lines.iter().zip(&labels).enumerate() {
            // `ShapeStyle`'s own `stroke_width`: `RGBColor` has two (plotters' and the backend's).
            let style = ShapeStyle::from(COLOURS[i % COLOURS.len()]).stroke_width(2);
            chart
                .draw_series(LineSeries::new(line.iter().copied(), style))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, TEXT_SIZE))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// Writes 8-bit RGB `pixels` of `size` as a PNG file.
fn write_png(path: &Path, pixels: &[u8], (width, height): (u32, u32)) -> Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(())
}

/// Pixels of one glyph's side.
const GLYPH_PX: i32 = 8;

/// A drawing backend that draws text with the `font8x8` bitmap font and everything else
/// with the wrapped backend (see the module doc).
struct Font8x8<B> {
    inner: B,
}

impl<B> Font8x8<B> {
    /// Whole-pixel scale of the 8-pixel glyphs for a font of `size` pixels.
    ///
    /// Plotters lays out legends and labels by its own estimate of text width (0.7 em per
    /// character, with em = size / 1.24², i.e. about 0.455 × size), not by the backend's; the
    /// glyphs are scaled to stay within it (8 px per character needs a size of 17.6 or more,
    /// hence [`TEXT_SIZE`]).
    fn scale(size: f64) -> i32 {
        ((size * 0.455 / 8.0).floor() as i32).clamp(1, 8)
    }

    /// The glyph of `c` (`?` for what the ASCII table lacks).
    fn glyph(c: char) -> [u8; 8] {
        let table = &font8x8::legacy::BASIC_LEGACY;
        let index = if c.is_ascii() && !c.is_ascii_control() { c as usize } else { '?' as usize };
        table[index]
    }
}

impl<B: DrawingBackend> DrawingBackend for Font8x8<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (iw, ih): (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, (iw, ih), src)
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let side = GLYPH_PX * Self::scale(style.size());
        let chars = i32::try_from(text.chars().count()).unwrap_or(i32::MAX);
        let width = u32::try_from(chars.saturating_mul(side)).unwrap_or(u32::MAX);
        Ok((width, side.unsigned_abs()))
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let scale = Self::scale(style.size());
        let side = GLYPH_PX * scale;
        let width = i32::try_from(text.chars().count()).unwrap_or(i32::MAX).saturating_mul(side);
        // Anchor and rotation as plotters' own text drawing does: offset the unrotated text
        // from its anchor, then rotate about the anchor.
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -side / 2,
            VPos::Bottom => -side,
        };
        let transform = style.transform();
        let (w, h) = self.get_size();
        let (w, h) = (i32::try_from(w).unwrap_or(i32::MAX), i32::try_from(h).unwrap_or(i32::MAX));
        for (column, c) in (0..).zip(text.chars()) {
            for (row, bits) in (0..).zip(Self::glyph(c)) {
                for bit in 0..GLYPH_PX {
                    if bits & (1 << bit) == 0 {
                        continue;
                    }
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let x = column * side + bit * scale + sx + dx;
                            let y = row * scale + sy + dy;
                            let (x, y) = transform.transform(x, y);
                            let (x, y) = (pos.0 + x, pos.1 + y);
                            if (0..w).contains(&x) && (0..h).contains(&y) {
                                self.inner.draw_pixel((x, y), color)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ycsb::stats::Recorder;
    use crate::ycsb::workload::OpKind;

    /// A report of `seconds` seconds whose throughput and latency vary with `phase`.
    fn synthetic(system: &str, seconds: u64, phase: u64) -> Report {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        for second in 0..seconds {
            let ops = 50 + (second * 7 + phase * 13) % 40;
            for i in 0..ops {
                let at = start + Duration::from_secs(second) + Duration::from_millis(i);
                let latency = Duration::from_micros(500 + (second + phase) * 100 + i * 3);
                recorder.record(OpKind::Read, latency, true, at);
            }
        }
        recorder.report(system, "a", 16, Duration::from_secs(seconds))
    }

    #[test]
    fn plots_svg_and_png() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let reports = [synthetic("tessera", 20, 0), synthetic("etcd", 15, 1)];
        let svg = dir.path().join("run.svg");
        plot(&reports, &svg).expect("an SVG plot");
        let text = std::fs::read_to_string(&svg).expect("the SVG reads back");
        assert!(text.contains("<svg"));
        assert!(text.contains("tessera a") && text.contains("etcd a"), "legend labels");
        let png = dir.path().join("run.PNG");
        plot(&reports, &png).expect("a PNG plot");
        let bytes = std::fs::read(&png).expect("the PNG reads back");
        assert!(bytes.len() > 1000);
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn other_extensions_and_nothing_to_plot_fail() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let reports = [synthetic("tessera", 3, 0)];
        for name in ["run.txt", "run"] {
            let error = plot(&reports, &dir.path().join(name)).expect_err("no format");
            assert!(error.to_string().contains("*.svg or *.png"), "{error}");
        }
        assert!(plot(&[], &dir.path().join("run.svg")).is_err());
    }

    #[test]
    fn duplicate_labels_name_the_clients() {
        let (mut a, b) = (synthetic("etcd", 2, 0), synthetic("etcd", 2, 0));
        a.clients = 64;
        assert_eq!(labels(&[a, b]), ["etcd a (64 clients)", "etcd a (16 clients)"]);
        assert_eq!(labels(&[synthetic("tessera", 1, 0)]), ["tessera a"]);
    }
}
