#ifndef KDTOOL_CBLAS_SHIM_H
#define KDTOOL_CBLAS_SHIM_H
#include <cblas.h>
#endif
