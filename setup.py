"""Build script for fastconv's compiled kernels.

Everything declarative lives in pyproject.toml; this file exists because the
extension needs build-time decisions that setuptools cannot express there:

* OpenMP flags per compiler (gcc/clang ``-fopenmp``, MSVC ``/openmp``, Apple
  clang ``-Xpreprocessor -fopenmp`` against Homebrew's libomp when found).
  A compiler without OpenMP gets serial kernels and a loud warning;
  ``FASTCONV_FAIL_NO_OPENMP=1`` turns that into an error.
* ``-O3`` but never ``-march=native`` or ``-ffast-math``: one wheel must run on
  any x86-64, and AVX2 / AVX-512 code paths are chosen at run time
  (see csrc/fc_runtime.c).
* Cython directives set once here, with ``FASTCONV_DEBUG=1`` turning bounds
  checking back on, and ``FASTCONV_SANITIZE=1`` building with ASan + UBSan.
"""

import glob
import os
import shutil
import sys
import tempfile
import textwrap
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# by pass and route; docs/design.md has the table from each public function to these
CSRC = ["csrc/fc_conv_fwd.c", "csrc/fc_conv_grad_input.c", "csrc/fc_conv_grad_weight.c",
        "csrc/fc_winograd.c", "csrc/fc_rowwino.c", "csrc/fc_winograd_grad_weight.c",
        "csrc/fc_rowwino_grad_weight.c", "csrc/fc_gemm.c",
        "csrc/fc_pool.c", "csrc/fc_eltwise.c", "csrc/fc_optim.c", "csrc/fc_ukernels.c",
        "csrc/fc_runtime.c", "csrc/fc_scratch.c", "csrc/fc_team.c"]


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _probe_openmp(compiler, flags, link_flags):
    """Compile and link a tiny OpenMP program; True if it works."""
    src = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
        }
        """
    )
    tmp = tempfile.mkdtemp(prefix="fastconv-omp-")
    try:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(src)
        objs = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(
            objs, os.path.join(tmp, "probe"), extra_postargs=link_flags
        )
        return True
    except Exception:  # any compile or link failure means "no OpenMP"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _openmp_flags(compiler):
    """Return (compile_flags, link_flags) for OpenMP, or (None, None)."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    if sys.platform == "darwin":
        for prefix in (os.environ.get("LIBOMP_PREFIX"), "/opt/homebrew/opt/libomp",
                       "/usr/local/opt/libomp"):
            if prefix and os.path.isdir(prefix):
                candidates.insert(0, (
                    ["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"],
                    [f"-L{prefix}/lib", "-lomp", f"-Wl,-rpath,{prefix}/lib"],
                ))
    for cflags, lflags in candidates:
        if _probe_openmp(compiler, cflags, lflags):
            return cflags, lflags
    return None, None


class BuildExt(build_ext):
    """build_ext that picks OpenMP and optimisation flags for the compiler."""

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        omp_c, omp_l = _openmp_flags(self.compiler)
        if omp_c is None:
            msg = ("fastconv: this compiler cannot build OpenMP code; the kernels "
                   "will run on one thread. Install an OpenMP runtime (libgomp, "
                   "libomp) to get parallel kernels.")
            if _env_flag("FASTCONV_FAIL_NO_OPENMP"):
                raise RuntimeError(msg + " (FASTCONV_FAIL_NO_OPENMP is set)")
            warnings.warn(msg)
            print("WARNING: " + msg, file=sys.stderr)
            omp_c, omp_l = [], []
            macros = [("FC_HAVE_OPENMP", "0")]
        else:
            macros = [("FC_HAVE_OPENMP", "1")]

        if msvc:
            opt = ["/O2"]
        else:
            # -fno-math-errno and -fno-trapping-math are value-preserving: they only
            # let the compiler vectorise; no -ffast-math, which changes results.
            opt = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c11",
                   "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
            if _env_flag("FASTCONV_SANITIZE"):
                # no scratch cache: reused blocks would hide over-reads from ASan
                macros.append(("FC_NO_SCRATCH_CACHE", "1"))
                opt = ["-O1", "-g", "-fno-omit-frame-pointer",
                       "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
                omp_l = omp_l + ["-fsanitize=address,undefined"]
        compiler_name = os.path.basename(str(self.compiler.compiler[0])
                                         if hasattr(self.compiler, "compiler") else
                                         self.compiler.compiler_type)
        macros.append(("FC_COMPILER", '"%s"' % compiler_name))
        for ext in self.extensions:
            ext.extra_compile_args = opt + omp_c + list(ext.extra_compile_args)
            ext.extra_link_args = omp_l + list(ext.extra_link_args)
            ext.define_macros = list(ext.define_macros) + macros
        super().build_extensions()

    def run(self):
        super().run()
        if not self.inplace:
            self._copy_into_source_tree()

    def _copy_into_source_tree(self):
        """Also place the built extension next to the package's sources.

        ``python -m fastconv ...`` and ``python -m pytest`` put the current folder
        first on the import path, so from the root of a checkout they import the
        ``fastconv/`` folder rather than the installed package. After
        ``pip install .`` (which builds in the source tree) that folder then holds
        the same compiled module as the installed copy, so both import the same
        code. Builds from an unpacked sdist copy it into their own temporary tree,
        which is harmless. A checkout that cannot be written to is left as it is.
        """
        here = os.path.dirname(os.path.abspath(__file__))
        for ext in self.extensions:
            built = self.get_ext_fullpath(ext.name)
            parts = ext.name.split(".")
            dest_dir = os.path.join(here, *parts[:-1])
            dest = os.path.join(dest_dir, os.path.basename(built))
            if not os.path.isdir(dest_dir) or os.path.abspath(built) == dest:
                continue
            try:
                tmp = dest + ".tmp"
                shutil.copyfile(built, tmp)
                os.replace(tmp, dest)  # never leave a half-written module behind
            except OSError as exc:
                print(f"fastconv: not copying {os.path.basename(built)} into the source "
                      f"tree ({exc}); run from another folder", file=sys.stderr)


def _extensions():
    directives = {
        "language_level": "3",
        "boundscheck": False,
        "wraparound": False,
        "initializedcheck": False,
        "cdivision": True,
        "embedsignature": True,
    }
    if _env_flag("FASTCONV_DEBUG"):
        directives.update(boundscheck=True, wraparound=True, initializedcheck=True)
    exts = [
        Extension(
            "fastconv._kernels",
            sources=["fastconv/_kernels.pyx"] + CSRC,
            include_dirs=["csrc", np.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            depends=sorted(glob.glob("csrc/*.h")) + ["fastconv/_kernels.pxd", "fastconv/_plan_program.pxi"],
        )
    ]
    return cythonize(exts, compiler_directives=directives,
                     include_path=["fastconv"], quiet=True)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
