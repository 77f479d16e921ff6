#ifndef KDTOOL_CIMAGE_SHIM_H
#define KDTOOL_CIMAGE_SHIM_H
#include <stdio.h>
#include <stddef.h>
#include <png.h>
#include <jpeglib.h>
#include <jerror.h>
#endif
