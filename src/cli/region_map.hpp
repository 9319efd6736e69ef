#pragma once
// The region map picture of `dynascope regions --plane P.npy --image map.png`: the plane's linear
// regions filled in colours tinted by the predicted class, their edges, the decision boundary and
// the data points that lie near the plane, written as PNG (libpng).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "dynascope/regions.hpp"

namespace dynascope::cli {

struct RegionMap {
  index_t resolution = 512;             // image width and height; pixel (row i, col j) is grid point
                                        // s = (j + 1/2) / R, t = (i + 1/2) / R, drawn with t upwards
  std::vector<std::int64_t> region;     // [R * R] region id per grid point
  std::vector<int> label;               // [R * R] predicted class per grid point
  const regions::PlaneRegions* exact = nullptr;  // exact polygons and boundary, when computed
  std::vector<std::array<double, 2>> points;     // data points projected on the plane, (s, t)
  std::vector<int> point_labels;                 // their classes (empty: none)
};

// Renders the map and writes it atomically to `path`. Throws IoError when the file cannot be written.
void write_region_map(const std::string& path, const RegionMap& map);

}  // namespace dynascope::cli
