/* convscope forward.js — a model's forward pass in plain JavaScript (no network, no libraries).
 *
 * Shared by the static atlas' draw pad and the explorer page. A program comes from
 * convscope.report.jsmodel.forward_program(model): operations (conv2d, pooling, linear,
 * batch-norm as an affine, activations, flatten) and float32 weights in base64.
 *
 *   var net = new ConvscopeForward.Network(program);
 *   var out = net.forward(pixels);   // pixels: uint8, H*W*C channels-last (what the model sees)
 *   out.layers['Conv2D_1']           // {shape: [32, 26, 26], data: Float32Array}
 *   out.probabilities                // Float32Array(classes)
 *
 * Tensors are float32 between operations, as in PyTorch; sums are accumulated in doubles.
 * Also here: mnistify() (the MNIST conversion of convscope.data.user_image.mnistify with
 * Pillow's Lanczos resampling), colour tables and the activation-grid drawing both pages use.
 */
(function (root) {
  'use strict';

  // ------------------------------------------------------------------ weights
  function decodeBase64(text) {
    var binary = atob(text), bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }
  function decodeFloats(text) {
    var bytes = decodeBase64(text);
    return new Float32Array(bytes.buffer, 0, bytes.length >> 2);
  }

  function tensor(shape, data) { return {shape: shape, data: data || new Float32Array(shape.reduce(function (a, b) { return a * b; }, 1))}; }
  function numberOf(v) { return v === '-inf' ? -Infinity : (v === 'inf' ? Infinity : v); }

  // ------------------------------------------------------------------ operations
  function conv2d(x, op, W) {
    var C = x.shape[0], H = x.shape[1], Wd = x.shape[2];
    var kh = op.k[0], kw = op.k[1], sh = op.stride[0], sw = op.stride[1], dh = op.dilation[0], dw = op.dilation[1];
    var pt = op.pad[0], pb = op.pad[1], pl = op.pad[2], pr = op.pad[3];
    var OH = Math.floor((H + pt + pb - dh * (kh - 1) - 1) / sh) + 1, OW = Math.floor((Wd + pl + pr - dw * (kw - 1) - 1) / sw) + 1;
    var cout = op.cout, groups = op.groups, cinG = op.cin / groups, coutG = cout / groups, P = OH * OW, K = cinG * kh * kw;
    var out = tensor([cout, OH, OW]), acc = new Float64Array(P), xd = x.data, cols = new Float64Array(K * P);
    for (var g = 0; g < groups; g++) {
      // im2col: one contiguous row of P input values per (input channel, ky, kx), zeros in the padding
      cols.fill(0);
      for (var icg = 0; icg < cinG; icg++) {
        var plane = (g * cinG + icg) * H * Wd;
        for (var ky = 0; ky < kh; ky++) for (var kx = 0; kx < kw; kx++) {
          var r = ((icg * kh + ky) * kw + kx) * P;
          for (var oy = 0; oy < OH; oy++) {
            var iy = oy * sh - pt + ky * dh;
            if (iy < 0 || iy >= H) continue;
            for (var ox = 0; ox < OW; ox++) {
              var ix = ox * sw - pl + kx * dw;
              if (ix >= 0 && ix < Wd) cols[r + oy * OW + ox] = xd[plane + iy * Wd + ix];
            }
          }
        }
      }
      for (var o = 0; o < coutG; o++) {
        var oc = g * coutG + o, wbase = op.w + oc * K;
        acc.fill(op.b === null ? 0 : W[op.b + oc]);
        for (var k = 0; k < K; k++) {
          var w = W[wbase + k];
          if (w === 0) continue;
          var base = k * P;
          for (var p = 0; p < P; p++) acc[p] += w * cols[base + p];
        }
        out.data.set(acc, oc * P);
      }
    }
    return out;
  }

  function poolSize(size, k, s, p, d, ceil) {
    var span = size + 2 * p - d * (k - 1) - 1, n = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
    if (ceil && (n - 1) * s >= size + p) n -= 1;  // the last window must start inside the input or the left padding
    return n;
  }

  function maxpool2d(x, op) {
    var C = x.shape[0], H = x.shape[1], Wd = x.shape[2], kh = op.k[0], kw = op.k[1], sh = op.stride[0], sw = op.stride[1];
    var ph = op.pad[0], pw = op.pad[1], dh = op.dilation[0], dw = op.dilation[1];
    var OH = poolSize(H, kh, sh, ph, dh, op.ceil), OW = poolSize(Wd, kw, sw, pw, dw, op.ceil);
    var out = tensor([C, OH, OW]), xd = x.data, od = out.data;
    for (var c = 0; c < C; c++) for (var oy = 0; oy < OH; oy++) for (var ox = 0; ox < OW; ox++) {
      var best = -Infinity;
      for (var ky = 0; ky < kh; ky++) {
        var iy = oy * sh - ph + ky * dh; if (iy < 0 || iy >= H) continue;
        for (var kx = 0; kx < kw; kx++) {
          var ix = ox * sw - pw + kx * dw; if (ix < 0 || ix >= Wd) continue;
          var v = xd[(c * H + iy) * Wd + ix]; if (v > best || v !== v) best = v;
        }
      }
      od[(c * OH + oy) * OW + ox] = best;
    }
    return out;
  }

  function avgpool2d(x, op) {
    var C = x.shape[0], H = x.shape[1], Wd = x.shape[2], kh = op.k[0], kw = op.k[1], sh = op.stride[0], sw = op.stride[1];
    var ph = op.pad[0], pw = op.pad[1];
    var OH = poolSize(H, kh, sh, ph, 1, op.ceil), OW = poolSize(Wd, kw, sw, pw, 1, op.ceil);
    var out = tensor([C, OH, OW]), xd = x.data, od = out.data;
    for (var c = 0; c < C; c++) for (var oy = 0; oy < OH; oy++) for (var ox = 0; ox < OW; ox++) {
      var hs = oy * sh - ph, ws = ox * sw - pw, he = Math.min(hs + kh, H + ph), we = Math.min(ws + kw, Wd + pw);
      var poolArea = (he - hs) * (we - ws);
      hs = Math.max(hs, 0); ws = Math.max(ws, 0); he = Math.min(he, H); we = Math.min(we, Wd);
      var sum = 0;
      for (var iy = hs; iy < he; iy++) for (var ix = ws; ix < we; ix++) sum += xd[(c * H + iy) * Wd + ix];
      var divisor = op.divisor ? op.divisor : (op.include_pad ? poolArea : (he - hs) * (we - ws));
      od[(c * OH + oy) * OW + ox] = sum / divisor;
    }
    return out;
  }

  function paddedAvgpool2d(x, op) {  // zero padding (left, right, top, bottom) left out of the mean
    var C = x.shape[0], H = x.shape[1], Wd = x.shape[2], kh = op.k[0], kw = op.k[1], sh = op.stride[0], sw = op.stride[1];
    var pl = op.pad[0], pr = op.pad[1], pt = op.pad[2], pb = op.pad[3];
    var OH = Math.floor((H + pt + pb - kh) / sh) + 1, OW = Math.floor((Wd + pl + pr - kw) / sw) + 1;
    var out = tensor([C, OH, OW]), xd = x.data, od = out.data;
    for (var c = 0; c < C; c++) for (var oy = 0; oy < OH; oy++) for (var ox = 0; ox < OW; ox++) {
      var sum = 0, count = 0;
      for (var ky = 0; ky < kh; ky++) {
        var iy = oy * sh + ky - pt; if (iy < 0 || iy >= H) continue;
        for (var kx = 0; kx < kw; kx++) {
          var ix = ox * sw + kx - pl; if (ix < 0 || ix >= Wd) continue;
          sum += xd[(c * H + iy) * Wd + ix]; count++;
        }
      }
      od[(c * OH + oy) * OW + ox] = sum / count;
    }
    return out;
  }

  function adaptivePool(x, op) {
    var C = x.shape[0], H = x.shape[1], Wd = x.shape[2], OH = op.size[0], OW = op.size[1];
    var out = tensor([C, OH, OW]), xd = x.data, od = out.data, max = op.mode === 'max';
    for (var c = 0; c < C; c++) for (var oy = 0; oy < OH; oy++) for (var ox = 0; ox < OW; ox++) {
      var hs = Math.floor(oy * H / OH), he = Math.ceil((oy + 1) * H / OH), ws = Math.floor(ox * Wd / OW), we = Math.ceil((ox + 1) * Wd / OW);
      var v = max ? -Infinity : 0;
      for (var iy = hs; iy < he; iy++) for (var ix = ws; ix < we; ix++) {
        var a = xd[(c * H + iy) * Wd + ix];
        if (max) { if (a > v || a !== a) v = a; } else v += a;
      }
      od[(c * OH + oy) * OW + ox] = max ? v : v / ((he - hs) * (we - ws));
    }
    return out;
  }

  function globalPool(x, op) {
    var C = x.shape[0], n = x.shape[1] * x.shape[2], out = tensor([C]), xd = x.data;
    for (var c = 0; c < C; c++) {
      var v = op.mode === 'max' ? -Infinity : 0;
      for (var i = 0; i < n; i++) { var a = xd[c * n + i]; if (op.mode === 'max') { if (a > v || a !== a) v = a; } else v += a; }
      out.data[c] = op.mode === 'max' ? v : v / n;
    }
    return out;
  }

  function pad(x, op) {
    var C = x.shape[0], H = x.shape[1], Wd = x.shape[2], l = op.pad[0], r = op.pad[1], t = op.pad[2], b = op.pad[3];
    var OH = H + t + b, OW = Wd + l + r, out = tensor([C, OH, OW]), value = numberOf(op.value);
    out.data.fill(value);
    for (var c = 0; c < C; c++) for (var y = 0; y < H; y++)
      out.data.set(x.data.subarray((c * H + y) * Wd, (c * H + y + 1) * Wd), (c * OH + y + t) * OW + l);
    return out;
  }

  function linear(x, op, W) {
    var n = op['in'], m = op.out, out = tensor([m]), xd = x.data;
    if (xd.length !== n) throw new Error('linear layer ' + op.from + ' expects ' + n + ' inputs, got ' + xd.length);
    for (var o = 0; o < m; o++) {
      var s = op.b === null ? 0 : W[op.b + o], base = op.w + o * n;
      for (var i = 0; i < n; i++) s += W[base + i] * xd[i];
      out.data[o] = s;
    }
    return out;
  }

  function affine(x, op, W) {  // batch-norm at inference: per channel scale and shift
    var C = op.channels, per = x.data.length / C, out = tensor(x.shape.slice());
    for (var c = 0; c < C; c++) {
      var a = W[op.scale + c], b = W[op.shift + c];
      for (var i = 0; i < per; i++) out.data[c * per + i] = x.data[c * per + i] * a + b;
    }
    return out;
  }

  // erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit)
  function erf(x) {
    var z = Math.abs(x), t = 1 / (1 + 0.5 * z);
    var r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
      t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
    return x >= 0 ? 1 - r : r - 1;
  }
  var SELU_ALPHA = 1.6732632423543772848170429916717, SELU_SCALE = 1.0507009873554804934193349852946;
  function pointwise(x, op) {
    var f;
    switch (op.op) {
      case 'relu': f = function (v) { return v > 0 ? v : (v !== v ? v : 0); }; break;
      case 'clamp': f = function (v) { return Math.min(op.max, Math.max(op.min, v)); }; break;
      case 'leaky_relu': f = function (v) { return v >= 0 ? v : v * op.slope; }; break;
      case 'elu': f = function (v) { return v > 0 ? v : op.alpha * (Math.exp(v) - 1); }; break;
      case 'celu': f = function (v) { return Math.max(0, v) + Math.min(0, op.alpha * (Math.exp(v / op.alpha) - 1)); }; break;
      case 'selu': f = function (v) { return SELU_SCALE * (v > 0 ? v : SELU_ALPHA * (Math.exp(v) - 1)); }; break;
      case 'sigmoid': f = function (v) { return 1 / (1 + Math.exp(-v)); }; break;
      case 'tanh': f = Math.tanh; break;
      case 'gelu': f = op.approximate === 'tanh'
        ? function (v) { return 0.5 * v * (1 + Math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))); }
        : function (v) { return 0.5 * v * (1 + erf(v / Math.SQRT2)); }; break;
      case 'silu': f = function (v) { return v / (1 + Math.exp(-v)); }; break;
      case 'softplus': f = function (v) { return v * op.beta > op.threshold ? v : Math.log1p(Math.exp(v * op.beta)) / op.beta; }; break;
      case 'hardswish': f = function (v) { return v * Math.min(Math.max(v + 3, 0), 6) / 6; }; break;
      case 'hardsigmoid': f = function (v) { return Math.min(Math.max(v + 3, 0), 6) / 6; }; break;
      default: throw new Error('unknown operation ' + op.op);
    }
    var out = tensor(x.shape.slice());
    for (var i = 0; i < x.data.length; i++) out.data[i] = f(x.data[i]);
    return out;
  }

  function softmax(values) {
    var max = -Infinity, i, out = new Float32Array(values.length), sum = 0;
    for (i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
    var e = new Float64Array(values.length);
    for (i = 0; i < values.length; i++) { e[i] = Math.exp(values[i] - max); sum += e[i]; }
    for (i = 0; i < values.length; i++) out[i] = e[i] / sum;
    return out;
  }

  function softmaxOp(x, op) {
    if (x.shape.length === 1) return {shape: x.shape.slice(), data: softmax(x.data)};
    var C = x.shape[0], n = x.data.length / C, out = tensor(x.shape.slice());  // over channels (dim 1 of N,C,H,W)
    if (!(op.dim === 1 || op.dim === -3)) throw new Error('softmax over dim ' + op.dim + ' of a map tensor');
    for (var i = 0; i < n; i++) {
      var col = new Float32Array(C);
      for (var c = 0; c < C; c++) col[c] = x.data[c * n + i];
      var s = softmax(col);
      for (c = 0; c < C; c++) out.data[c * n + i] = s[c];
    }
    return out;
  }

  // ------------------------------------------------------------------ the network
  function Network(program) {
    if (!program || program.format !== 'convscope-js/1') throw new Error('not a convscope-js/1 program');
    this.program = program;
    this.weights = decodeFloats(program.weights);
    this.inputShape = program.input_shape;
    this.classNames = program.class_names;
    this.layers = program.layers;
  }

  /** uint8 pixels (H*W*C, channels last) -> float32 model input (C, H, W), as convscope.data.preprocess does. */
  Network.prototype.preprocess = function (pixels) {
    var C = this.inputShape[0], H = this.inputShape[1], W = this.inputShape[2], n = H * W, p = this.program;
    if (pixels.length !== n * C) throw new Error('expected ' + n * C + ' pixels, got ' + pixels.length);
    var x = tensor([C, H, W]), i, c;
    for (c = 0; c < C; c++) for (i = 0; i < n; i++) x.data[c * n + i] = pixels[i * C + c];
    if (p.preprocessing === 'unit') { for (i = 0; i < x.data.length; i++) x.data[i] = x.data[i] / 255; }
    else if (p.preprocessing === 'meanstd') {
      for (c = 0; c < C; c++) {
        var m = Math.fround(p.mean[c]), s = Math.fround(p.std[c]);
        for (i = 0; i < n; i++) x.data[c * n + i] = (Math.fround(x.data[c * n + i] / 255) - m) / s;
      }
    } else if (p.preprocessing === 'standardize') {
      var sum = 0, sq = 0, len = x.data.length;
      for (i = 0; i < len; i++) sum += x.data[i];
      var mean = Math.fround(sum / len);
      for (i = 0; i < len; i++) { var d = x.data[i] - mean; sq += d * d; }
      var std = Math.fround(Math.fround(Math.sqrt(sq / len)) + Math.fround(1e-7));
      for (i = 0; i < len; i++) x.data[i] = Math.fround(x.data[i] - mean) / std;
    }
    return x;
  };

  /** Run the program. Returns {input, layers: {name: tensor}, logits: Float32Array, probabilities: Float32Array}. */
  Network.prototype.forward = function (pixels) {
    var x = this.preprocess(pixels), input = x, W = this.weights, layers = {};
    var ops = this.program.ops;
    for (var i = 0; i < ops.length; i++) {
      var op = ops[i];
      switch (op.op) {
        case 'mark': layers[op.name] = x; break;
        case 'conv2d': x = conv2d(x, op, W); break;
        case 'maxpool2d': x = maxpool2d(x, op); break;
        case 'avgpool2d': x = avgpool2d(x, op); break;
        case 'padded_avgpool2d': x = paddedAvgpool2d(x, op); break;
        case 'adaptive_pool': x = adaptivePool(x, op); break;
        case 'global_pool': x = globalPool(x, op); break;
        case 'pad': x = pad(x, op); break;
        case 'flatten': x = {shape: [x.data.length], data: x.data}; break;
        case 'linear': x = linear(x, op, W); break;
        case 'affine': x = affine(x, op, W); break;
        case 'softmax': x = softmaxOp(x, op); break;
        default: x = pointwise(x, op);
      }
    }
    return {input: input, layers: layers, logits: x.data, probabilities: softmax(x.data)};
  };

  // ------------------------------------------------------------------ MNIST-style conversion
  // Python's round() and numpy's rint(): halves to even.
  function roundHalfEven(v) {
    var r = Math.round(v);
    return (Math.abs(v % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
  }
  function lanczos(x) {
    function sinc(v) { if (v === 0) return 1; v *= Math.PI; return Math.sin(v) / v; }
    return (-3 <= x && x < 3) ? sinc(x) * sinc(x / 3) : 0;
  }
  // Pillow's precompute_coeffs (Resample.c) for the Lanczos filter.
  function coefficients(inSize, outSize) {
    var scale = inSize / outSize, filterscale = Math.max(scale, 1), support = 3 * filterscale, result = [];
    for (var xx = 0; xx < outSize; xx++) {
      var center = (xx + 0.5) * scale, ss = 1 / filterscale;
      var xmin = Math.trunc(center - support + 0.5); if (xmin < 0) xmin = 0;
      var xmax = Math.trunc(center + support + 0.5); if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      var k = new Float64Array(xmax), ww = 0;
      for (var x = 0; x < xmax; x++) { k[x] = lanczos((x + xmin - center + 0.5) * ss); ww += k[x]; }
      if (ww !== 0) for (x = 0; x < xmax; x++) k[x] /= ww;
      result.push({min: xmin, k: k});
    }
    return result;
  }
  /** Pillow's Image.resize(..., LANCZOS) of a mode "F" (float32) image: horizontal pass, then vertical. */
  function resizeLanczos(src, w, h, nw, nh) {
    var horiz = coefficients(w, nw), vert = coefficients(h, nh), x, y, i, s, c;
    var needH = nw !== w, needV = nh !== h, img = src, iw = w, ih = h;
    var yFirst = vert[0].min, yLast = vert[nh - 1].min + vert[nh - 1].k.length;
    if (needH) {
      var rows = yLast - yFirst, tmp = new Float32Array(nw * rows);
      for (y = 0; y < rows; y++) for (x = 0; x < nw; x++) {
        c = horiz[x]; s = 0;
        for (i = 0; i < c.k.length; i++) s += img[(y + yFirst) * iw + c.min + i] * c.k[i];
        tmp[y * nw + x] = s;
      }
      img = tmp; iw = nw; ih = rows;
    } else yFirst = 0;
    if (!needV) return needH ? img : Float32Array.from(img);
    var out = new Float32Array(iw * nh);
    for (y = 0; y < nh; y++) {
      c = vert[y];
      var y0 = c.min - (needH ? yFirst : 0);
      for (x = 0; x < iw; x++) {
        s = 0;
        for (i = 0; i < c.k.length; i++) s += img[(y0 + i) * iw + x] * c.k[i];
        out[y * iw + x] = s;
      }
    }
    return out;
  }

  /** Gray levels (0..255, as Pillow's "L") of canvas RGBA data. */
  function grayOf(rgba) {
    var n = rgba.length >> 2, gray = new Float64Array(n);
    for (var i = 0; i < n; i++) gray[i] = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >> 16;
    return gray;
  }

  function median(values) {
    var v = Float64Array.from(values).sort(), n = v.length;
    return n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }

  /**
   * convscope.data.user_image.mnistify: gray (H*W, 0..255) -> {image: Uint8Array(size*size), inverted}
   * or null when there is no ink. Same steps and rounding as the Python function.
   */
  function mnistify(gray, w, h, size, box) {
    size = size || 28; box = box || 20;
    var border = [], x, y, i;
    for (x = 0; x < w; x++) border.push(gray[x]);
    for (x = 0; x < w; x++) border.push(gray[(h - 1) * w + x]);
    for (y = 0; y < h; y++) border.push(gray[y * w]);
    for (y = 0; y < h; y++) border.push(gray[y * w + w - 1]);
    var background = median(border), inverted = background > 127.5;
    var inkBackground = inverted ? 255 - background : background, ink = new Float64Array(w * h), peak = 0;
    for (i = 0; i < w * h; i++) {
      var v = (inverted ? 255 - gray[i] : gray[i]) - inkBackground;
      ink[i] = v > 0 ? v : 0; if (ink[i] > peak) peak = ink[i];
    }
    if (peak <= 8) return null;
    var top = -1, bottom = -1, left = w, right = -1, threshold = 0.2 * 255;
    for (i = 0; i < w * h; i++) ink[i] = ink[i] * (255 / peak);
    for (y = 0; y < h; y++) for (x = 0; x < w; x++) if (ink[y * w + x] > threshold) {
      if (top < 0) top = y; bottom = y; if (x < left) left = x; if (x > right) right = x;
    }
    bottom += 1; right += 1;
    var ch = bottom - top, cw = right - left, crop = new Float32Array(ch * cw);
    for (y = 0; y < ch; y++) for (x = 0; x < cw; x++) crop[y * cw + x] = ink[(y + top) * w + x + left];
    var scale = box / Math.max(ch, cw), nh = Math.max(1, roundHalfEven(ch * scale)), nw = Math.max(1, roundHalfEven(cw * scale));
    var small = (nh === ch && nw === cw) ? crop : resizeLanczos(crop, cw, ch, nw, nh);
    var total = 0, sy = 0, sx = 0, vals = new Float64Array(nh * nw);
    for (y = 0; y < nh; y++) for (x = 0; x < nw; x++) {
      var s = Math.min(255, Math.max(0, small[y * nw + x])); vals[y * nw + x] = s; total += s;
    }
    if (total <= 0) return null;
    for (y = 0; y < nh; y++) for (x = 0; x < nw; x++) { sy += y * vals[y * nw + x]; sx += x * vals[y * nw + x]; }
    var centre = (size - 1) / 2;
    var offY = Math.min(Math.max(roundHalfEven(centre - sy / total), 0), size - nh);
    var offX = Math.min(Math.max(roundHalfEven(centre - sx / total), 0), size - nw);
    var image = new Uint8Array(size * size);
    for (y = 0; y < nh; y++) for (x = 0; x < nw; x++)
      image[(y + offY) * size + x + offX] = Math.min(255, Math.max(0, roundHalfEven(vals[y * nw + x])));
    return {image: image, inverted: inverted, box: [top, left, bottom, right]};
  }

  // ------------------------------------------------------------------ colours and grids
  var LUT_HEX = {
    viridis: '44015444025645045745055946075a46085c460a5d460b5e470d60470e6147106347116447136548146748166848176948186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f854240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f881fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad8128ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc743fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc8635ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21ad8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725',
    RdBu_r: '05306106326407346708366a09386d0a3b700c3d730d3f760e41790f437b10457e114781124984134c87144e8a15508d1752901854931956961a58991b5a9c1c5c9f1d5fa21e61a51f63a82065ab2267ac2369ad246aae266caf276eb02870b12a71b22b73b32c75b42e77b52f79b5307ab6327cb7337eb83480b93681ba3783bb3885bc3a87bd3b88be3c8abe3e8cbf3f8ec0408fc14291c24393c34695c44997c54c99c64f9bc7529dc8569fc959a1ca5ca3cb5fa5cd62a7ce65a9cf68abd06bacd16eaed271b0d375b2d478b4d57bb6d67eb8d781bad884bcd987beda8ac0db8dc2dc90c4dd93c6de96c7df98c8e09bc9e09dcbe1a0cce2a2cde3a5cee3a7d0e4a9d1e5acd2e5aed3e6b1d5e7b3d6e8b6d7e8b8d8e9bbdaeabddbeac0dcebc2ddecc5dfecc7e0edcae1eecce2efcfe4efd1e5f0d2e6f0d4e6f1d5e7f1d7e8f1d8e9f1dae9f2dbeaf2ddebf2deebf2e0ecf3e1edf3e3edf3e4eef4e6eff4e7f0f4e9f0f4eaf1f5ecf2f5edf2f5eff3f5f0f4f6f2f5f6f3f5f6f5f6f7f6f7f7f7f6f6f7f5f4f8f4f2f8f3f0f8f2eff8f1edf9f0ebf9efe9f9eee7f9ede5f9ebe3faeae1fae9dffae8defae7dcfbe6dafbe5d8fbe4d6fbe3d4fce2d2fce0d0fcdfcffcdecdfdddcbfddcc9fddbc7fdd9c4fcd7c2fcd5bffcd3bcfbd0b9fbceb7fbccb4facab1fac8aff9c6acf9c4a9f9c2a7f8bfa4f8bda1f8bb9ef7b99cf7b799f7b596f6b394f6b191f6af8ef5ac8bf5aa89f5a886f4a683f3a481f2a17ff19e7df09c7bef9979ee9677ec9374eb9172ea8e70e98b6ee8896ce6866ae58368e48066e37e64e27b62e17860df765ede735cdd7059dc6e57db6b55da6853d86551d7634fd6604dd55d4cd35a4ad25849d05548cf5246ce4f45cc4c44cb4942c94741c84440c6413ec53e3dc43b3cc2383ac13639bf3338be3036bd2d35bb2a34ba2832b82531b72230b61f2eb41c2db3192cb1182bae172aab162aa81529a51429a213289f12289c1127991027960f27930e26900d268d0c258a0b25870a248409248108237f08237c07227906227605217304217003206d02206a011f67001f'
  };
  var LUTS = {};
  function lut(name) {
    if (!LUTS[name]) {
      var hex = LUT_HEX[name], table = new Uint8Array(768);
      for (var i = 0; i < 768; i++) table[i] = parseInt(hex.substr(2 * i, 2), 16);
      LUTS[name] = table;
    }
    return LUTS[name];
  }
  function cssGradient(name) {
    var t = lut(name), stops = [];
    for (var i = 0; i <= 8; i++) { var j = Math.round(i * 255 / 8); stops.push('rgb(' + t[3 * j] + ',' + t[3 * j + 1] + ',' + t[3 * j + 2] + ') ' + (i * 12.5) + '%'); }
    return 'linear-gradient(90deg,' + stops.join(',') + ')';
  }

  /** How a layer's output is laid out as a grid (the atlas' rules): maps per row, cell size. */
  function gridLayout(shape, opts) {
    opts = opts || {};
    var gap = opts.gap === undefined ? 2 : opts.gap, scale = opts.scale || 3, dense = shape.length === 1, perRow, cellH, cellW, count;
    if (dense) {
      count = 1; var F = shape[0];
      perRow = opts.perRow || (F === 100 ? 10 : Math.max(1, Math.ceil(Math.sqrt(F))));
      var rowsD = Math.ceil(F / perRow);
      return {dense: true, count: F, perRow: perRow, rows: rowsD, cellW: scale * 3, cellH: scale * 3, gap: 0, scale: scale * 3,
              width: perRow * scale * 3, height: rowsD * scale * 3, shape: shape};
    }
    count = shape[0]; cellH = shape[1]; cellW = shape[2];
    perRow = opts.perRow || ((cellW > 5 || count < 64) ? 8 : 16);
    var fit = Math.max(1, Math.floor((opts.maxWidth || 1e9) / (perRow * (cellW + gap))));
    scale = Math.max(1, Math.min(scale, fit));
    var rows = Math.ceil(count / perRow);
    return {dense: false, count: count, perRow: perRow, rows: rows, cellW: cellW * scale, cellH: cellH * scale, gap: gap, scale: scale,
            width: perRow * (cellW * scale + gap) - gap, height: rows * (cellH * scale + gap) - gap, shape: shape};
  }

  /** Draw a layer's output with one shared colour scale [vmin, vmax] (default 0..max). Returns the layout. */
  function drawGrid(canvas, t, opts) {
    opts = opts || {};
    var layout = gridLayout(t.shape, opts), table = lut(opts.cmap || 'viridis');
    var vmin = opts.vmin === undefined ? 0 : opts.vmin, vmax = opts.vmax;
    if (vmax === undefined) { vmax = -Infinity; for (var q = 0; q < t.data.length; q++) if (t.data[q] > vmax) vmax = t.data[q]; }
    if (!(vmax > vmin)) vmax = vmin + 1;
    canvas.width = layout.width; canvas.height = layout.height;
    var ctx = canvas.getContext('2d'), img = ctx.createImageData(layout.width, layout.height), px = img.data, i;
    for (i = 0; i < px.length; i += 4) { px[i] = 230; px[i + 1] = 232; px[i + 2] = 236; px[i + 3] = 255; }
    function put(x0, y0, s, v) {
      var level = Math.round(Math.min(1, Math.max(0, (v - vmin) / (vmax - vmin))) * 255);
      for (var dy = 0; dy < s; dy++) for (var dx = 0; dx < s; dx++) {
        var o = ((y0 + dy) * layout.width + x0 + dx) * 4;
        px[o] = table[3 * level]; px[o + 1] = table[3 * level + 1]; px[o + 2] = table[3 * level + 2];
      }
    }
    if (layout.dense) {
      for (i = 0; i < layout.count; i++) put((i % layout.perRow) * layout.scale, Math.floor(i / layout.perRow) * layout.scale, layout.scale, t.data[i]);
    } else {
      var H = t.shape[1], W = t.shape[2], s = layout.scale;
      for (var m = 0; m < layout.count; m++) {
        var x0 = (m % layout.perRow) * (layout.cellW + layout.gap), y0 = Math.floor(m / layout.perRow) * (layout.cellH + layout.gap);
        for (var y = 0; y < H; y++) for (var x = 0; x < W; x++) put(x0 + x * s, y0 + y * s, s, t.data[(m * H + y) * W + x]);
      }
    }
    ctx.putImageData(img, 0, 0);
    layout.vmin = vmin; layout.vmax = vmax;
    return layout;
  }

  /** The map / unit under canvas pixel (x, y) of a grid: {map, row, col} (dense: {map: node}) or null. */
  function hitGrid(layout, x, y) {
    if (layout.dense) {
      var cx = Math.floor(x / layout.scale), cy = Math.floor(y / layout.scale), node = cy * layout.perRow + cx;
      return (cx >= 0 && cx < layout.perRow && node >= 0 && node < layout.count) ? {map: node, row: null, col: null} : null;
    }
    var stepX = layout.cellW + layout.gap, stepY = layout.cellH + layout.gap;
    var col = Math.floor(x / stepX), row = Math.floor(y / stepY), map = row * layout.perRow + col;
    var ix = x - col * stepX, iy = y - row * stepY;
    if (col < 0 || col >= layout.perRow || map < 0 || map >= layout.count || ix >= layout.cellW || iy >= layout.cellH) return null;
    return {map: map, row: Math.floor(iy / layout.scale), col: Math.floor(ix / layout.scale)};
  }

  /** Draw an input picture (uint8 H*W*C channels last) enlarged on a canvas. */
  function drawPicture(canvas, pixels, shape, scale) {
    var C = shape[0], H = shape[1], W = shape[2];
    scale = scale || Math.max(1, Math.floor(140 / Math.max(H, W)));
    canvas.width = W * scale; canvas.height = H * scale;
    var ctx = canvas.getContext('2d'), img = ctx.createImageData(W, H);
    for (var i = 0; i < H * W; i++) {
      img.data[4 * i] = pixels[i * C]; img.data[4 * i + 1] = pixels[i * C + (C === 3 ? 1 : 0)];
      img.data[4 * i + 2] = pixels[i * C + (C === 3 ? 2 : 0)]; img.data[4 * i + 3] = 255;
    }
    var tmp = document.createElement('canvas'); tmp.width = W; tmp.height = H; tmp.getContext('2d').putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false; ctx.drawImage(tmp, 0, 0, W * scale, H * scale);
    return scale;
  }

  root.ConvscopeForward = {
    Network: Network, softmax: softmax, mnistify: mnistify, grayOf: grayOf, resizeLanczos: resizeLanczos,
    roundHalfEven: roundHalfEven, decodeBase64: decodeBase64, decodeFloats: decodeFloats, lut: lut, cssGradient: cssGradient,
    gridLayout: gridLayout, drawGrid: drawGrid, hitGrid: hitGrid, drawPicture: drawPicture
  };
})(typeof window !== 'undefined' ? window : this);
