#include "cli/region_map.hpp"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>

#include "dynascope/error.hpp"
#include "dynascope/io.hpp"

namespace dynascope::cli {

namespace {

using Rgb = std::array<double, 3>;

// Class hues (colour-blind-safe palette of Okabe & Ito), cycled past eight classes.
const Rgb kClassColours[] = {{0.00, 0.45, 0.70}, {0.90, 0.62, 0.00}, {0.00, 0.62, 0.45}, {0.80, 0.40, 0.00},
                             {0.80, 0.47, 0.65}, {0.34, 0.71, 0.91}, {0.94, 0.89, 0.26}, {0.40, 0.40, 0.40}};

Rgb class_colour(int label) { return kClassColours[static_cast<std::size_t>(label) % 8]; }

// A light, distinct shade per region: the class hue mixed with white, its lightness jittered by a
// hash of the region id so neighbouring regions of one class still read as different.
Rgb region_colour(std::int64_t id, int label) {
  std::uint64_t h = static_cast<std::uint64_t>(id) * 0x9E3779B97F4A7C15ULL;
  h ^= h >> 29;
  const double jitter = static_cast<double>(h % 1000) / 1000.0;  // [0, 1)
  const double white = 0.55 + 0.35 * jitter;
  const Rgb c = class_colour(label);
  return {c[0] * (1 - white) + white, c[1] * (1 - white) + white, c[2] * (1 - white) + white};
}

struct Canvas {
  index_t w, h;
  std::vector<Rgb> px;
  void blend(index_t x, index_t y, const Rgb& c, double a) {
    if (x < 0 || y < 0 || x >= w || y >= h || a <= 0) return;
    Rgb& p = px[std::size_t(y * w + x)];
    for (int k = 0; k < 3; ++k) p[std::size_t(k)] = p[std::size_t(k)] * (1 - a) + c[std::size_t(k)] * a;
  }
  // An anti-aliased line of the given width (pixels), by distance to the segment.
  void line(double x0, double y0, double x1, double y1, const Rgb& c, double width, double alpha) {
    const double r = 0.5 * width + 1;
    const index_t xa = static_cast<index_t>(std::floor(std::min(x0, x1) - r)), xb = static_cast<index_t>(std::ceil(std::max(x0, x1) + r));
    const index_t ya = static_cast<index_t>(std::floor(std::min(y0, y1) - r)), yb = static_cast<index_t>(std::ceil(std::max(y0, y1) + r));
    const double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (index_t y = std::max<index_t>(ya, 0); y <= std::min(yb, h - 1); ++y)
      for (index_t x = std::max<index_t>(xa, 0); x <= std::min(xb, w - 1); ++x) {
        const double px_ = double(x) + 0.5, py_ = double(y) + 0.5;
        double t = len2 > 0 ? ((px_ - x0) * dx + (py_ - y0) * dy) / len2 : 0;
        t = std::clamp(t, 0.0, 1.0);
        const double ex = x0 + t * dx - px_, ey = y0 + t * dy - py_;
        const double d = std::sqrt(ex * ex + ey * ey);
        blend(x, y, c, alpha * std::clamp(0.5 * width + 0.5 - d, 0.0, 1.0));
      }
  }
  void dot(double cx, double cy, double radius, const Rgb& fill) {
    for (index_t y = static_cast<index_t>(cy - radius - 1); y <= static_cast<index_t>(cy + radius + 1); ++y)
      for (index_t x = static_cast<index_t>(cx - radius - 1); x <= static_cast<index_t>(cx + radius + 1); ++x) {
        const double d = std::hypot(double(x) + 0.5 - cx, double(y) + 0.5 - cy);
        blend(x, y, {0.1, 0.1, 0.1}, std::clamp(radius + 0.5 - d, 0.0, 1.0));
        blend(x, y, fill, std::clamp(radius - 0.7 - d, 0.0, 1.0));
      }
  }
};

void png_to_vector(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::vector<unsigned char>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}

std::vector<unsigned char> encode_png(const Canvas& c) {
  std::vector<unsigned char> rgb(std::size_t(c.w * c.h * 3));
  for (std::size_t i = 0; i < c.px.size(); ++i)
    for (int k = 0; k < 3; ++k)
      rgb[3 * i + std::size_t(k)] = static_cast<unsigned char>(std::lround(std::clamp(c.px[i][std::size_t(k)], 0.0, 1.0) * 255));
  std::vector<unsigned char> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_write_struct(&png, &info);
    throw IoError("region map: libpng could not start an image");
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw IoError("region map: libpng failed to encode the image");
  }
  png_set_write_fn(png, &out, png_to_vector, nullptr);
  png_set_IHDR(png, info, static_cast<png_uint_32>(c.w), static_cast<png_uint_32>(c.h), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (index_t y = 0; y < c.h; ++y) png_write_row(png, rgb.data() + y * c.w * 3);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace

void write_region_map(const std::string& path, const RegionMap& map) {
  const index_t r = map.resolution;
  Canvas c{r, r, std::vector<Rgb>(std::size_t(r * r))};
  // Grid row i (t = (i + 1/2) / R) is image row R - 1 - i, so t grows upwards like a plot's y axis.
  auto at = [&](index_t i, index_t j) { return std::size_t(i * r + j); };
  for (index_t i = 0; i < r; ++i)
    for (index_t j = 0; j < r; ++j)
      c.px[std::size_t((r - 1 - i) * r + j)] = region_colour(map.region[at(i, j)], map.label[at(i, j)]);
  const Rgb edge{0.25, 0.25, 0.28}, boundary{0.05, 0.05, 0.05};
  auto to_px = [&](double s, double t) { return std::array<double, 2>{s * double(r), (1 - t) * double(r)}; };
  if (map.exact) {
    for (const auto& p : map.exact->polygons)
      for (std::size_t k = 0; k < p.vertices.size(); ++k) {
        const auto a = to_px(p.vertices[k][0], p.vertices[k][1]);
        const auto b = to_px(p.vertices[(k + 1) % p.vertices.size()][0], p.vertices[(k + 1) % p.vertices.size()][1]);
        c.line(a[0], a[1], b[0], b[1], edge, 0.8, 0.55);
      }
    for (const auto& s : map.exact->boundary_segments) {
      const auto a = to_px(s[0], s[1]), b = to_px(s[2], s[3]);
      c.line(a[0], a[1], b[0], b[1], boundary, 2.4, 1.0);
    }
  } else {
    // Edges where the grid's region id changes; the decision boundary where the class does.
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < r; ++j) {
        const index_t y = r - 1 - i;
        const bool right = j + 1 < r && map.region[at(i, j)] != map.region[at(i, j + 1)];
        const bool up = i + 1 < r && map.region[at(i, j)] != map.region[at(i + 1, j)];
        if (right || up) c.blend(j, y, edge, 0.6);
        const bool class_right = j + 1 < r && map.label[at(i, j)] != map.label[at(i, j + 1)];
        const bool class_up = i + 1 < r && map.label[at(i, j)] != map.label[at(i + 1, j)];
        if (class_right || class_up) {
          c.blend(j, y, boundary, 1.0);
          c.blend(j + 1, y, boundary, 0.5);
          c.blend(j, y - 1, boundary, 0.5);
        }
      }
  }
  const double radius = std::max(2.0, double(r) / 200.0);
  for (std::size_t k = 0; k < map.points.size(); ++k) {
    const auto p = to_px(map.points[k][0], map.points[k][1]);
    const Rgb fill = map.point_labels.empty() ? Rgb{1, 1, 1} : class_colour(map.point_labels[k]);
    c.dot(p[0], p[1], radius, fill);
  }
  const std::vector<unsigned char> png = encode_png(c);
  io::write_file_atomic(path, png.data(), png.size());
}

}  // namespace dynascope::cli
