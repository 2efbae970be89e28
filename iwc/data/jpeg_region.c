/* _iwc_jpeg: decode only a band of a JPEG (libjpeg-turbo's jpeg_crop_scanline and jpeg_skip_scanlines).
 *
 * decode_rows(data, scale, left, top, right, bottom) decodes the JPEG in `data` at 1/`scale` (1, 2, 4, 8) as
 * 8-bit RGB, but only output rows [top, bottom) and the columns [left, right) widened to whole iMCUs, then
 * stops: the rows below `bottom` are never entropy-decoded, the rows above skip the IDCT and colour
 * conversion. Returns (RGB bytes, x0, width, output width, output height), the bytes being `bottom - top`
 * rows of `width` pixels starting at column x0 <= left. Pixels near the band's edges can differ from a full
 * decode (fancy upsampling sees no neighbour there): callers decode a margin and keep the inside.
 * Errors (a bad stream, truncated data) raise ValueError with libjpeg's message. The GIL is released while
 * decoding, so threads decode in parallel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>
#include <jerror.h>

#define STR_(x) #x
#define STR(x) STR_(x)

struct error_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr cinfo)
{
    struct error_mgr *err = (struct error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* Warnings about corrupt data are ignored, as PIL ignores them; running out of data is an error, as in PIL. */
static void on_message(j_common_ptr cinfo, int level)
{
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
        on_error(cinfo);
}

static PyObject *decode_rows(PyObject *self, PyObject *args)
{
    Py_buffer data;
    int scale, left, top, right, bottom;
    if (!PyArg_ParseTuple(args, "y*iiiii", &data, &scale, &left, &top, &right, &bottom))
        return NULL;
    if (scale != 1 && scale != 2 && scale != 4 && scale != 8) {
        PyBuffer_Release(&data);
        return PyErr_Format(PyExc_ValueError, "scale must be 1, 2, 4 or 8, not %d", scale);
    }

    struct jpeg_decompress_struct cinfo;
    struct error_mgr err;
    unsigned char *volatile pixels = NULL;
    volatile int failed = 0, out_of_range = 0, no_memory = 0;
    JDIMENSION x0 = 0, width = 0, out_width = 0, out_height = 0;

    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    Py_BEGIN_ALLOW_THREADS
    jpeg_create_decompress(&cinfo);
    if (setjmp(err.jump)) {
        failed = 1;
    } else {
        jpeg_mem_src(&cinfo, data.buf, (unsigned long)data.len);
        jpeg_read_header(&cinfo, TRUE);
        cinfo.out_color_space = JCS_RGB;
        cinfo.scale_num = 1;
        cinfo.scale_denom = (unsigned int)scale;
        jpeg_start_decompress(&cinfo);
        out_width = cinfo.output_width;
        out_height = cinfo.output_height;
        if (left < 0 || top < 0 || right <= left || bottom <= top || (JDIMENSION)right > out_width
            || (JDIMENSION)bottom > out_height || cinfo.output_components != 3) {
            out_of_range = 1;
        } else {
            x0 = (JDIMENSION)left;
            width = (JDIMENSION)(right - left);
            jpeg_crop_scanline(&cinfo, &x0, &width);
            pixels = malloc((size_t)width * 3 * (size_t)(bottom - top));
            if (pixels == NULL) {
                no_memory = 1;
            } else {
                if (top > 0)
                    jpeg_skip_scanlines(&cinfo, (JDIMENSION)top);
                while (cinfo.output_scanline < (JDIMENSION)bottom) {
                    JSAMPROW row = pixels + (size_t)(cinfo.output_scanline - top) * width * 3;
                    jpeg_read_scanlines(&cinfo, &row, 1);
                }
            }
        }
        jpeg_abort_decompress(&cinfo);  /* the rows below `bottom` are never read */
    }
    jpeg_destroy_decompress(&cinfo);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);

    if (failed || out_of_range || no_memory) {
        free(pixels);
        if (no_memory)
            return PyErr_NoMemory();
        if (out_of_range)
            return PyErr_Format(PyExc_ValueError, "rows [%d, %d) x columns [%d, %d) are not inside the %ux%u RGB "
                                "output", top, bottom, left, right, out_width, out_height);
        return PyErr_Format(PyExc_ValueError, "%s", err.message);
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)pixels, (Py_ssize_t)width * 3 * (bottom - top));
    free(pixels);
    if (bytes == NULL)
        return NULL;
    return Py_BuildValue("NIIII", bytes, x0, width, out_width, out_height);
}

static PyMethodDef methods[] = {
    {"decode_rows", decode_rows, METH_VARARGS,
     "decode_rows(data, scale, left, top, right, bottom) -> (rgb bytes, x0, width, output width, output height)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_iwc_jpeg", "Band decoding of JPEGs (libjpeg-turbo).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__iwc_jpeg(void)
{
    PyObject *m = PyModule_Create(&module);
#ifdef LIBJPEG_TURBO_VERSION
    if (m != NULL && PyModule_AddStringConstant(m, "LIBJPEG_TURBO_VERSION", STR(LIBJPEG_TURBO_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    return m;
}
