#ifndef KDTOOL_CZLIB_SHIM_H
#define KDTOOL_CZLIB_SHIM_H
#include <zlib.h>
#endif
