// dynascope datasets: the built-in datasets, their shapes and whether their files are installed.
#include "cli/common.hpp"
#include "dynascope/datasets.hpp"

namespace dynascope::cli {

Command register_datasets(CLI::App& app) {
  auto* cmd = app.add_subcommand("datasets", "List the built-in datasets with their shapes and availability");
  auto opts = std::make_shared<CommonOptions>();
  add_common_flags(*cmd, *opts, /*computes=*/false);
  return {cmd, [opts] {
            const auto start = std::chrono::steady_clock::now();
            const Context ctx = make_context(*opts);
            json list = json::array();
            for (const auto& d : data::list_datasets()) {
              json e;
              e["name"] = d.name;
              e["task"] = data::to_string(d.task);
              e["samples"] = d.n;
              e["input_dim"] = d.d;
              e[d.task == data::Task::classification ? "classes" : "outputs"] = d.outputs;
              e["available"] = d.available;
              e["source"] = d.note;
              e["description"] = d.description;
              list.push_back(e);
            }
            json r;
            r["datasets"] = list;
            emit_result("datasets", *opts, ctx, r, start);
            return 0;
          }};
}

}  // namespace dynascope::cli
