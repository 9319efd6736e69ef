// dynascope info: version, backends built, CUDA devices seen (or why none), BLAS in use.
#include <omp.h>

#include <cstdlib>

#include "cli/common.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/config.hpp"

namespace dynascope::cli {

Command register_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Version, backends built, CUDA devices seen (or why none), BLAS in use");
  auto opts = std::make_shared<CommonOptions>();
  add_common_flags(*cmd, *opts, /*computes=*/false);
  return {cmd, [opts] {
            const auto start = std::chrono::steady_clock::now();
            const Context ctx = make_context(*opts);
            const CudaStatus st = cuda_status();
            json r;
            json backends = json::array({"host"});
            if (st.built) backends.push_back("cuda");
            r["backends_built"] = backends;
            json cuda;
            cuda["built"] = st.built;
            cuda["architectures"] = DYNASCOPE_CUDA_ARCHITECTURES;
            cuda["devices"] = st.device_count;
            if (st.device_count == 0) cuda["reason"] = st.reason;
            r["cuda"] = cuda;
            r["blas"] = blas::host_blas_name();
            r["host_threads"] = ctx.threads() > 0 ? ctx.threads() : omp_get_max_threads();
            // What the OpenMP runtime was started with (the tool sets passive unless told otherwise).
            const char* policy = std::getenv("OMP_WAIT_POLICY");
            r["omp_wait_policy"] = policy ? json(policy) : json(nullptr);
            r["workspace_budget_bytes"] = ctx.workspace_budget();
            emit_result("info", *opts, ctx, r, start);
            return 0;
          }};
}

}  // namespace dynascope::cli
