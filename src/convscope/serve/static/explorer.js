/* convscope explorer page. Talks to this server's /api only; draws with forward.js' grid code. */
(function () {
  'use strict';
  var F = window.ConvscopeForward;
  var $ = function (id) { return document.getElementById(id); };
  var S = {
    model: null, a: null, aInput: null, b: null, bInput: null, unit: null, card: null,
    method: 'saliency', target: 'predicted', layouts: {}, inflight: false, pending: null,
    padVersion: 0, shownVersion: 0, forwards: 0, errors: [], explained: null, deconv: null, ready: false
  };
  window.explorer = {state: S};
  var LINK = {search: location.search, hash: location.hash};  // the state a shared link brought (read once)

  // ------------------------------------------------------------------ small helpers
  function status(text, error) {
    var el = $('status'); el.textContent = text; el.className = 'status' + (error ? ' error' : '');
    if (error) S.errors.push(text);
  }
  function esc(text) { return String(text).replace(/[&<>"']/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }
  function request(method, path, body, type) {
    var options = {method: method, headers: {}};
    if (body !== undefined) {
      if (type) { options.body = body; options.headers['Content-Type'] = type; }
      else { options.body = JSON.stringify(body); options.headers['Content-Type'] = 'application/json'; }
    }
    return fetch(path, options).then(function (response) {
      return response.json().catch(function () { return {error: 'the server sent no JSON (' + response.status + ')'}; })
        .then(function (data) {
          if (!response.ok) throw new Error(data.error || ('HTTP ' + response.status));
          return data;
        });
    });
  }
  function b64u(bytes) {
    var text = ''; for (var i = 0; i < bytes.length; i += 32768) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
    return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }
  function fromB64u(text) { text = text.replace(/-/g, '+').replace(/_/g, '/'); while (text.length % 4) text += '='; return F.decodeBase64(text); }
  function decodeForward(data) {
    var layers = {};
    Object.keys(data.layers).forEach(function (name) {
      var l = data.layers[name]; layers[name] = {shape: l.shape, data: F.decodeFloats(l.data), max: l.max, min: l.min};
    });
    return {pixels: F.decodeBase64(data.input.pixels), shape: data.input.shape, source: data.input.source, label: data.input.label,
            probabilities: data.probabilities, predicted: data.predicted, predictedName: data.predicted_name, layers: layers};
  }
  function inputShape() { return S.model.spec.input_shape; }
  // conv, pool and dense layers, and any other layer whose output is maps (C, H, W): batch-norm, activations…
  // (other layers with flat outputs — Flatten, Dropout — only repeat their input's values)
  function shownLayers() {
    return S.model.layers.filter(function (l) { return l.kind !== 'other' ? l.shape.length === 1 || l.shape.length === 3 : l.shape.length === 3; });
  }
  function layerInfo(name) { return S.model.layers.filter(function (l) { return l.name === name; })[0]; }
  function pixelsToRows(pixels) {  // uint8 H*W*C -> nested rows for JSON
    var sh = inputShape(), C = sh[0], H = sh[1], W = sh[2], rows = [];
    for (var y = 0; y < H; y++) {
      var row = [];
      for (var x = 0; x < W; x++) {
        if (C === 1) row.push(pixels[y * W + x]);
        else row.push(Array.from(pixels.subarray((y * W + x) * 3, (y * W + x) * 3 + 3)));
      }
      rows.push(row);
    }
    return rows;
  }
  // what goes to the server for an input: {body, type} (JSON object or a file)
  function payload(input, extra) {
    if (input.kind === 'file') return {body: input.blob, type: input.blob.type || 'application/octet-stream'};
    var body = Object.assign({}, extra || {});
    if (input.kind === 'ref') body.image = input.ref;
    else body.pixels = pixelsToRows(input.pixels);
    return {body: body};
  }
  // the input as it appears in the URL: test:N, or px:<base64url of what the model sees>
  function urlValue(input, result) {
    if (!input) return null;
    if (input.kind === 'ref') return input.ref;
    return result ? 'px:' + b64u(result.pixels) : null;
  }

  // ------------------------------------------------------------------ forward
  function forward(input, which) {
    var p = payload(input, {layers: 'all', encoding: 'base64'});
    var path = '/api/forward' + (p.type ? '?layers=all&encoding=base64' : '');
    var started = performance.now();
    return request('POST', path, p.body, p.type).then(function (data) {
      var result = decodeForward(data);
      result.ms = performance.now() - started;
      if (input.kind !== 'ref') { input.kind = 'pixels'; input.pixels = result.pixels; input.blob = null; }
      if (which === 'b') S.b = result; else S.a = result;
      S.forwards += 1;
      return result;
    });
  }

  function setInput(input, label) {
    S.aInput = input; S.explained = null;
    $('explain-out').innerHTML = '';
    return forward(input, 'a').then(function (result) {
      $('input-source').textContent = label || result.source || '';
      render();
      status('prediction ' + result.predictedName + ' · ' + result.ms.toFixed(0) + ' ms round trip');
      if (S.card) refreshCardInput();
      if (S.paintPad) S.paintPad(result.pixels);  // the pad shows the picked / uploaded input; drawing continues on it
      return result;
    }).catch(function (error) { status(error.message, true); });
  }

  // the drawing: at most one request in flight; the newest drawing is sent when it returns
  function sendDrawing() {
    if (S.inflight) { S.pending = true; return; }
    S.inflight = true; S.pending = false;
    var version = S.padVersion, pad = $('pad');
    pad.toBlob(function (blob) {
      var input = {kind: 'file', blob: blob};
      S.aInput = input;
      forward(input, 'a').then(function (result) {
        S.shownVersion = version; $('input-source').textContent = 'your drawing';
        render();
        status('prediction ' + result.predictedName + ' · ' + result.ms.toFixed(0) + ' ms round trip');
        if (S.card) refreshCardInput();
      }).catch(function (error) {
        S.shownVersion = version;
        if (/no ink/.test(error.message)) { status('draw a little more'); } else status(error.message, true);
      }).then(function () {
        S.inflight = false;
        if (S.pending) sendDrawing();
      });
    }, 'image/png');
  }

  // ------------------------------------------------------------------ drawing pad
  function setupPad() {
    var pad = $('pad'), ctx = pad.getContext('2d'), drawing = false, last = null;
    function clear() { ctx.fillStyle = '#000'; ctx.fillRect(0, 0, pad.width, pad.height); }
    clear();
    function point(e) { var r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; }
    function stroke(p) {
      ctx.strokeStyle = '#fff'; ctx.lineWidth = 12; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
      ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke(); last = p;
      S.padVersion += 1; sendDrawing();
    }
    pad.addEventListener('pointerdown', function (e) { drawing = true; last = point(e); pad.setPointerCapture(e.pointerId); stroke(last); });
    pad.addEventListener('pointermove', function (e) { if (drawing) stroke(point(e)); });
    ['pointerup', 'pointercancel'].forEach(function (t) { pad.addEventListener(t, function () { drawing = false; last = null; }); });
    $('clear').addEventListener('click', function () {
      clear(); S.padVersion += 1; S.shownVersion = S.padVersion; S.a = null; S.aInput = null; render(); updateUrl();
    });
    // an input that did not come from the pad (a dataset image, an upload, a link): the pixels the model sees
    // (gray, H×W), scaled to the pad without smoothing — so the pad shows what is analysed, and strokes drawn
    // next are added to it (Clear starts from black)
    S.paintPad = function (pixels) {
      var sh = inputShape(), H = sh[1], W = sh[2], small = document.createElement('canvas');
      small.width = W; small.height = H;
      var g = small.getContext('2d'), image = g.createImageData(W, H);
      for (var i = 0; i < H * W; i++) {
        image.data[4 * i] = image.data[4 * i + 1] = image.data[4 * i + 2] = pixels[i]; image.data[4 * i + 3] = 255;
      }
      g.putImageData(image, 0, 0);
      clear(); ctx.imageSmoothingEnabled = false; ctx.drawImage(small, 0, 0, pad.width, pad.height);
      S.padVersion += 1; S.shownVersion = S.padVersion;
    };
  }

  // ------------------------------------------------------------------ rendering
  function bars() {
    var a = S.a, names = S.model.spec.class_names, el = $('bars');
    if (!a) { el.innerHTML = ''; return; }
    var order = names.map(function (_, i) { return i; });
    if (names.length > 10) order = order.sort(function (x, y) { return a.probabilities[y] - a.probabilities[x]; }).slice(0, 10);
    el.innerHTML = order.map(function (i) {
      var p = a.probabilities[i], best = i === a.predicted, pb = S.b ? S.b.probabilities[i] : null;
      return '<span>' + (best ? '<b>' + esc(names[i]) + '</b>' : esc(names[i])) + '</span><span><span class="b' + (best ? ' pred' : '') +
        '" style="width:' + Math.max(0.5, 100 * p).toFixed(1) + '%"></span>' +
        (pb === null ? '' : '<span class="b other" style="width:' + Math.max(0.5, 100 * pb).toFixed(1) + '%" title="B"></span>') +
        '</span><span class="num" data-class="' + i + '">' + (100 * p).toFixed(1) + '%</span>';
    }).join('');
    el.dataset.predicted = names[a.predicted];
  }

  function seen() {
    var canvas = $('seen'), overlay = $('seen-overlay');
    if (!S.a) { canvas.getContext('2d').clearRect(0, 0, canvas.width, canvas.height); return; }
    S.seenScale = F.drawPicture(canvas, S.a.pixels, inputShape());
    overlay.width = canvas.width; overlay.height = canvas.height;
  }

  function layers() {
    var holder = $('layers'); holder.innerHTML = ''; S.layouts = {};
    if (!S.a) { holder.innerHTML = '<p class="note">' + (S.model.drawable ? 'Draw a digit on the black pad' : 'Upload or pick an image') + ' to see every layer.</p>'; return; }
    var width = Math.max(260, holder.clientWidth - 10), compare = !!S.b;
    shownLayers().forEach(function (l) {
      var ta = S.a.layers[l.name]; if (!ta) return;
      var section = document.createElement('div'); section.className = 'layer'; section.id = 'layer-' + l.name.replace(/\./g, '_');
      var vmax = ta.max, tb = compare ? S.b.layers[l.name] : null;
      if (tb) vmax = Math.max(vmax, tb.max);
      var vmin = Math.min(0, ta.min, tb ? tb.min : 0);
      section.innerHTML = '<h3>' + esc(l.name) + '<small>' + l.shape.join('×') + ' · ' + l.kind + ' · scale ' + vmin.toPrecision(3) + ' … ' +
        vmax.toPrecision(3) + '<span class="legend" style="background:' + F.cssGradient('viridis') + '"></span></small></h3>';
      var row = document.createElement('div'); row.className = 'row'; section.appendChild(row);
      var per = compare ? Math.floor((width - 30) / 3) : width;
      function add(t, caption, opts, key) {
        var fig = document.createElement('figure'), c = document.createElement('canvas'), cap = document.createElement('figcaption');
        c.dataset.layer = l.name; c.dataset.which = key;
        var layout = F.drawGrid(c, t, Object.assign({scale: t.shape.length === 1 ? 3 : 4, maxWidth: per}, opts));
        S.layouts[l.name + '/' + key] = layout; cap.textContent = caption;
        fig.appendChild(c); fig.appendChild(cap); row.appendChild(fig);
        c.addEventListener('mousemove', function (e) { hover(e, c, l, key); });
        c.addEventListener('mouseleave', function () { $('tip').hidden = true; clearOverlay(); });
        c.addEventListener('click', function (e) { pick(e, c, l); });
      }
      add(ta, compare ? 'A: ' + (S.a.source || 'input') : '', {vmin: vmin, vmax: vmax}, 'a');
      if (tb) {
        add(tb, 'B: ' + (S.b.source || 'input'), {vmin: vmin, vmax: vmax}, 'b');
        var diff = {shape: ta.shape, data: new Float32Array(ta.data.length)}, big = 0;
        for (var i = 0; i < diff.data.length; i++) { diff.data[i] = ta.data[i] - tb.data[i]; big = Math.max(big, Math.abs(diff.data[i])); }
        S.diffMax = S.diffMax || {}; S.diffMax[l.name] = big;
        add(diff, 'A − B (red: A larger, blue: B larger) · max |A−B| ' + big.toPrecision(3), {cmap: 'RdBu_r', vmin: -(big || 1), vmax: big || 1}, 'diff');
      }
      holder.appendChild(section);
    });
  }

  function render() { bars(); seen(); layers(); targets(); updateUrl(); }

  function clearOverlay() { var o = $('seen-overlay'); o.getContext('2d').clearRect(0, 0, o.width, o.height); $('unit-info').textContent = ''; }
  function drawField(layer, row, col, colour) {
    var info = layerInfo(layer), o = $('seen-overlay'), g = o.getContext('2d'), s = S.seenScale || 1;
    if (!info || !info.receptive_fields || row === null) return null;
    var r = info.receptive_fields.table[row][col];
    g.strokeStyle = colour || '#ff9f1c'; g.lineWidth = 2;
    g.strokeRect(r[1] * s + 1, r[0] * s + 1, (r[3] - r[1]) * s - 2, (r[2] - r[0]) * s - 2);
    return r;
  }
  function valueAt(t, hit) {
    if (t.shape.length === 1) return t.data[hit.map];
    return t.data[(hit.map * t.shape[1] + hit.row) * t.shape[2] + hit.col];
  }
  function hover(e, canvas, l, key) {
    var layout = S.layouts[l.name + '/' + key], r = canvas.getBoundingClientRect();
    var hit = F.hitGrid(layout, (e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height);
    var tip = $('tip');
    if (!hit) { tip.hidden = true; clearOverlay(); return; }
    var t = key === 'b' ? S.b.layers[l.name] : S.a.layers[l.name], address = l.name + ':' + hit.map + (hit.row === null ? '' : '@' + hit.row + ',' + hit.col);
    var v = key === 'diff' ? valueAt(S.a.layers[l.name], hit) - valueAt(S.b.layers[l.name], hit) : valueAt(t, hit);
    tip.textContent = address + ' = ' + v.toPrecision(4) + (key === 'diff' ? ' (A − B)' : '');
    tip.style.left = (e.clientX + 14) + 'px'; tip.style.top = (e.clientY + 12) + 'px'; tip.hidden = false;
    clearOverlay();
    var field = drawField(l.name, hit.row, hit.col);
    $('unit-info').textContent = field ? '· ' + address + ' sees rows ' + field[0] + '–' + (field[2] - 1) + ', columns ' + field[1] + '–' + (field[3] - 1) : '';
  }
  function pick(e, canvas, l) {
    var key = canvas.dataset.which, layout = S.layouts[l.name + '/' + key], r = canvas.getBoundingClientRect();
    var hit = F.hitGrid(layout, (e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height);
    if (!hit) return;
    S.unit = l.name + ':' + hit.map + (hit.row === null ? '' : '@' + hit.row + ',' + hit.col);
    openCard(l.name, hit.map);
  }

  // ------------------------------------------------------------------ explain
  function targets() {
    var select = $('target'), keep = S.target, names = S.model.spec.class_names, options = [['predicted', 'predicted class']];
    names.forEach(function (n, i) { options.push([String(i), 'class ' + n]); });
    if (S.unit) {
      var map = S.unit.split('@')[0];
      options.push([map, 'map ' + map + ' (mean)']);
      if (S.unit.indexOf('@') > 0) options.push([S.unit, 'unit ' + S.unit]);
    }
    if (keep && !options.some(function (o) { return o[0] === keep; })) options.push([keep, keep]);
    select.innerHTML = options.map(function (o) { return '<option value="' + esc(o[0]) + '">' + esc(o[1]) + '</option>'; }).join('');
    select.value = keep || 'predicted';
  }
  function heatmap(values, shape, signed, limit) {
    var C = shape[0], H = shape[1], W = shape[2], summed = new Float32Array(H * W);
    for (var c = 0; c < C; c++) for (var i = 0; i < H * W; i++) summed[i] += values[c * H * W + i];
    var canvas = document.createElement('canvas'), t = {shape: [1, H, W], data: summed};
    if (!limit) { limit = 0; for (i = 0; i < summed.length; i++) limit = Math.max(limit, Math.abs(summed[i])); }
    F.drawGrid(canvas, t, {cmap: signed ? 'RdBu_r' : 'viridis', vmin: signed ? -(limit || 1) : 0, vmax: limit || 1,
                           scale: Math.max(1, Math.floor(140 / Math.max(H, W))), gap: 0, perRow: 1});
    return canvas;
  }
  function explain(method, target) {
    if (!S.aInput || !S.a) { status('give an input first', true); return Promise.resolve(null); }
    var body = payload(S.aInput, {method: method, target: target === 'predicted' ? null : (/^\d+$/.test(target) ? +target : target),
                                  encoding: 'base64'});
    return request('POST', '/api/explain', body.body).then(function (data) {
      data.values = F.decodeFloats(data.attribution.data);
      return data;
    });
  }
  function runExplain() {
    S.method = $('method').value; S.target = $('target').value; updateUrl();
    status('explaining…');
    return explain(S.method, S.target).then(function (data) {
      if (!data) return;
      S.explained = data;
      var out = $('explain-out'); out.innerHTML = '';
      var fig = document.createElement('figure'); fig.appendChild(heatmap(data.values, data.attribution.shape, data.signed, data.limit_99));
      var cap = document.createElement('figcaption');
      cap.textContent = data.title + ' · target ' + (typeof data.target === 'number' ? 'class ' + S.model.spec.class_names[data.target] : data.target) +
        (data.signed ? ' · red for, blue against (±' + data.limit_99.toPrecision(2) + ', 99th percentile)' : '');
      fig.appendChild(cap); out.appendChild(fig);
      var input = document.createElement('figure'), c = document.createElement('canvas');
      F.drawPicture(c, S.a.pixels, inputShape()); input.appendChild(c); out.insertBefore(input, fig);
      status('explained with ' + data.title);
    }).catch(function (error) { status(error.message, true); });
  }

  // ------------------------------------------------------------------ map cards
  function openCard(layer, map) {
    var anchor = (layer + '-' + map).replace(/\./g, '_');
    if (location.hash !== '#' + anchor) history.replaceState(null, '', location.pathname + location.search + '#' + anchor);
    var card = $('card'), wasHidden = card.hidden; card.hidden = false;
    if (wasHidden && S.a) layers();  // the layer column just became narrower
    card.innerHTML = '<h2><span>' + esc(layer) + ':' + map + '</span><button type="button" id="card-close">×</button></h2><p class="note">loading…</p>';
    $('card-close').addEventListener('click', closeCard);
    S.card = {layer: layer, map: map, data: null};
    targets(); updateUrl();
    return request('GET', '/api/card?layer=' + encodeURIComponent(layer) + '&map=' + map).then(function (data) {
      if (!S.card || S.card.layer !== layer || S.card.map !== map) return;
      S.card.data = data; drawCard();
    }).catch(function (error) { status(error.message, true); });
  }
  function closeCard() {
    S.card = null; $('card').hidden = true; history.replaceState(null, '', location.pathname + location.search); updateUrl();
    if (S.a) layers();
  }
  function section(title, id) { return '<h3>' + esc(title) + '</h3><div id="' + id + '"></div>'; }
  function drawCard() {
    var d = S.card.data, card = $('card');
    card.innerHTML = '<h2><span>' + esc(d.layer) + ':' + d.map + ' <small>' + esc(d.kind) + '</small></span><button type="button" id="card-close">×</button></h2>' +
      '<p class="note">Link: <a href="#' + esc(d.anchor) + '">#' + esc(d.anchor) + '</a></p>' +
      section('For the current input', 'card-now') + section('Optimised input pattern', 'card-oip') +
      section('Top dataset examples', 'card-topk') + (d.filters ? section('Raw filters (' + d.filters.shape.join('×') + ')', 'card-filters') : '');
    $('card-close').addEventListener('click', closeCard);
    refreshCardInput(); drawOip(); drawTopk(); drawFilters();
  }
  function refreshCardInput() {
    var el = $('card-now'); if (!el || !S.card) return;
    var layer = S.card.layer, map = S.card.map, info = layerInfo(layer);
    if (!S.a) { el.innerHTML = '<p class="note">Give an input to see where this map fires.</p>'; return; }
    var t = S.a.layers[layer]; el.innerHTML = '';
    if (t.shape.length === 1) {
      el.innerHTML = '<p class="note">node value ' + t.data[map].toPrecision(4) + ' (dense nodes see the whole image)</p>';
    } else {
      var H = t.shape[1], W = t.shape[2], sh = inputShape(), plane = t.data.subarray(map * H * W, (map + 1) * H * W);
      var best = 0; for (var i = 1; i < plane.length; i++) if (plane[i] > plane[best]) best = i;
      // where it fires: the map's values at each unit's receptive-field centre, over the input
      var fires = document.createElement('canvas'), s = Math.max(1, Math.floor(140 / Math.max(sh[1], sh[2])));
      F.drawPicture(fires, S.a.pixels, sh, s);
      var g = fires.getContext('2d'), top = Math.max(1e-6, t.max), table = info.receptive_fields ? info.receptive_fields.table : null;
      for (var y = 0; y < H; y++) for (var x = 0; x < W; x++) {
        var v = plane[y * W + x]; if (!(v > 0) || !table) continue;
        var r = table[y][x], cy = (r[0] + r[2]) / 2, cx = (r[1] + r[3]) / 2, size = Math.max(1, (sh[1] / H) * s);
        g.fillStyle = 'rgba(255,159,28,' + Math.min(0.85, v / top).toFixed(3) + ')';
        g.fillRect(cx * s - size / 2, cy * s - size / 2, size, size);
      }
      if (table) {
        var rb = table[Math.floor(best / W)][best % W]; g.strokeStyle = '#ff3b30'; g.lineWidth = 2;
        g.strokeRect(rb[1] * s + 1, rb[0] * s + 1, (rb[3] - rb[1]) * s - 2, (rb[2] - rb[0]) * s - 2);
      }
      var f1 = document.createElement('figure'); f1.appendChild(fires);
      f1.insertAdjacentHTML('beforeend', '<figcaption>where it fires (orange, max ' + plane[best].toPrecision(3) + ' at @' +
        Math.floor(best / W) + ',' + (best % W) + ', red: its receptive field)</figcaption>');
      el.appendChild(f1);
    }
    var f2 = document.createElement('figure'); f2.innerHTML = '<figcaption>deconvnet: computing…</figcaption>'; el.appendChild(f2);
    var version = S.forwards;
    explain('deconvnet', layer + ':' + map).then(function (data) {
      if (!data || !S.card || S.card.layer !== layer || S.card.map !== map || S.forwards !== version) return;
      S.deconv = {layer: layer, map: map, data: data};
      f2.innerHTML = ''; f2.appendChild(heatmap(data.values, data.attribution.shape, true, data.limit_99));
      f2.insertAdjacentHTML('beforeend', '<figcaption>deconvnet of ' + esc(layer) + ':' + map + ' on this input</figcaption>');
    }).catch(function (error) { f2.innerHTML = '<figcaption class="warn">' + esc(error.message) + '</figcaption>'; });
  }
  function poll(job, el, done) {
    var bar = el.querySelector('.progress > div'), label = el.querySelector('.job-label');
    function step() {
      request('GET', '/api/jobs/' + job.id).then(function (j) {
        if (j.progress && j.progress.total) bar.style.width = (100 * j.progress.completed / j.progress.total).toFixed(0) + '%';
        if (label) label.textContent = (j.progress && j.progress.label ? j.progress.label : j.status) + ' · ' + j.seconds.toFixed(1) + ' s';
        if (j.status === 'done') done(j.result);
        else if (j.status === 'failed' || j.status === 'cancelled') el.innerHTML = '<p class="warn">' + esc(j.error || j.status) + '</p>';
        else if ($('card') && !$('card').hidden) setTimeout(step, 300);
      }).catch(function (error) { el.innerHTML = '<p class="warn">' + esc(error.message) + '</p>'; });
    }
    step();
  }
  function startJob(kind, el, done) {
    var layer = S.card.layer, map = S.card.map;
    el.innerHTML = '<div class="progress"><div></div></div><p class="note job-label">starting…</p>';
    request('POST', '/api/' + kind, {layer: layer, map: map}).then(function (job) {
      if (job.status === 'done') done(job.result); else poll(job, el, done);
    }).catch(function (error) { el.innerHTML = '<p class="warn">' + esc(error.message) + '</p>'; });
  }
  function drawOip() {
    var el = $('card-oip'), d = S.card.data;
    function show(oip) {
      S.card.data.oip = oip;
      el.innerHTML = '<img class="oip" width="140" alt="OIP ' + esc(d.layer) + ':' + d.map + '" src="' + oip.png + '">' +
        (oip.evolution ? '<br><img class="oip" alt="evolution" style="max-width:100%" src="' + oip.evolution + '">' : '') +
        '<p class="note">' + (oip.source === 'atlas' ? 'from the atlas' : 'computed now') + ' · mean activation ' + oip.final.toPrecision(3) +
        ' · ' + esc(oip.status) + ' · colour: standardised pixel ' + oip.scale[0] + ' … ' + oip.scale[1] + '</p>';
    }
    if (d.oip) { show(d.oip); return; }
    if (d.kind !== 'conv') { el.innerHTML = '<p class="note">OIPs are computed for conv layers.</p>'; return; }
    el.innerHTML = '<button type="button" id="oip-go">Compute the OIP</button> <span class="note">gradient ascent, a few seconds</span>';
    $('oip-go').addEventListener('click', function () { startJob('oip', el, show); });
  }
  function drawTopk() {
    var el = $('card-topk'), d = S.card.data;
    function show(top) {
      S.card.data.topk = top;
      var sh = top.image_shape, per = sh.reduce(function (a, b) { return a * b; }, 1), all = F.decodeBase64(top.pixels), html = '';
      el.innerHTML = '<div class="strip"></div><p class="note">the ' + top.images.length + ' of ' + top.num_images.toLocaleString() +
        ' images with the strongest ' + (d.kind === 'dense' ? 'node value' : 'unit') + (top.rects ? ' (orange: its receptive field)' : '') +
        (top.source === 'atlas' ? ' · from the atlas' : '') + '</p>';
      var strip = el.querySelector('.strip');
      top.images.forEach(function (ref, i) {
        var c = document.createElement('canvas'), shape = sh.length === 2 ? [1, sh[0], sh[1]] : [sh[2], sh[0], sh[1]];
        var s = F.drawPicture(c, all.subarray(i * per, (i + 1) * per), shape, Math.max(1, Math.floor(56 / Math.max(shape[1], shape[2]))));
        if (top.rects) { var r = top.rects[i], g = c.getContext('2d'); g.strokeStyle = '#ff9f1c'; g.lineWidth = 2;
          g.strokeRect(r[1] * s + 1, r[0] * s + 1, (r[3] - r[1]) * s - 2, (r[2] - r[0]) * s - 2); }
        var fig = document.createElement('figure'); fig.appendChild(c);
        var link = document.createElement('a'); link.href = '#'; link.textContent = ref; link.title = 'use ' + ref + ' as the input';
        link.addEventListener('click', function (e) { e.preventDefault(); setInput({kind: 'ref', ref: ref}, ref); });
        var cap = document.createElement('figcaption'); cap.appendChild(link); cap.appendChild(document.createTextNode(' ' + top.values[i].toPrecision(3)));
        fig.appendChild(cap); strip.appendChild(fig);
      });
    }
    if (d.topk) { show(d.topk); return; }
    if (!S.model.dataset) { el.innerHTML = '<p class="note">' + esc(S.model.dataset_note || 'no dataset loaded') + '</p>'; return; }
    el.innerHTML = '<button type="button" id="topk-go">Search the ' + S.model.dataset.size.toLocaleString() + ' images</button>';
    $('topk-go').addEventListener('click', function () { startJob('topk', el, show); });
  }
  function drawFilters() {
    var el = $('card-filters'), f = S.card.data.filters; if (!el || !f) return;
    var values = F.decodeFloats(f.data), c = document.createElement('canvas');
    F.drawGrid(c, {shape: f.shape, data: values}, {cmap: 'RdBu_r', vmin: -f.layer_limit, vmax: f.layer_limit, scale: f.shape[1] > 5 ? 2 : 6,
                                                     perRow: 16, gap: 1});
    el.appendChild(c);
    el.insertAdjacentHTML('beforeend', '<p class="note">one kernel per input map (' + f.shape[0] + '), blue negative, red positive, ±' +
      f.layer_limit.toPrecision(3) + ' (the layer\'s largest weight)' + (f.bias === null ? '' : ' · bias ' + f.bias.toPrecision(3)) + '</p>');
  }

  // ------------------------------------------------------------------ compare
  function pin() {
    if (!S.a) { status('give an input first', true); return; }
    S.bInput = S.aInput && S.aInput.kind === 'ref' ? {kind: 'ref', ref: S.aInput.ref} : {kind: 'pixels', pixels: S.a.pixels};
    S.b = S.a;
    $('b-info').textContent = 'B = ' + (S.b.source || 'input') + ' (' + S.b.predictedName + ')'; $('unpin').hidden = false;
    render(); status('B pinned: the next input is compared with it');
  }
  function unpin() { S.b = null; S.bInput = null; $('b-info').textContent = ''; $('unpin').hidden = true; render(); }

  // ------------------------------------------------------------------ the URL
  function updateUrl() {
    if (!S.ready) return;
    var q = new URLSearchParams();
    q.set('model', S.model.name);
    var a = urlValue(S.aInput, S.a), b = urlValue(S.bInput, S.b);
    if (a) q.set('input', a);
    if (b) q.set('b', b);
    if (S.unit) q.set('unit', S.unit);
    if (S.explained || S.method !== 'saliency' || S.target !== 'predicted') { q.set('method', S.method); q.set('target', S.target); }
    var hash = S.card ? '#' + (S.card.layer + '-' + S.card.map).replace(/\./g, '_') : '';
    var url = location.pathname + '?' + q.toString() + hash;
    history.replaceState(null, '', url);
    $('share-link').href = url;
  }
  function inputFromUrl(value) {
    if (!value) return null;
    if (/^px:/.test(value)) {
      var pixels = fromB64u(value.slice(3)), sh = inputShape();
      if (pixels.length !== sh[0] * sh[1] * sh[2]) { status('the link\'s image does not fit this model', true); return null; }
      return {kind: 'pixels', pixels: pixels};
    }
    return {kind: 'ref', ref: value};
  }
  function restore() {
    var q = new URLSearchParams(LINK.search), steps = Promise.resolve();
    if (q.get('model') && q.get('model') !== S.model.name) status('this link was made for model ' + q.get('model') + '; this server shows ' + S.model.name, true);
    if (q.get('method') && S.model.methods.indexOf(q.get('method')) >= 0) { S.method = q.get('method'); $('method').value = S.method; }
    if (q.get('target')) S.target = q.get('target');
    if (q.get('unit')) S.unit = q.get('unit');
    var b = inputFromUrl(q.get('b')), a = inputFromUrl(q.get('input'));
    if (b) steps = steps.then(function () { return forward(b, 'b'); }).then(function () {
      S.bInput = b; $('b-info').textContent = 'B = ' + (S.b.source || 'input') + ' (' + S.b.predictedName + ')'; $('unpin').hidden = false;
    });
    if (a) steps = steps.then(function () { return setInput(a, a.kind === 'ref' ? a.ref : 'from the link'); });
    return steps.then(function () {
      targets(); $('target').value = S.target;
      var card = LINK.hash.slice(1).match(/^(.+)-(\d+)$/);
      var jobs = [];
      if (card) {
        var layer = S.model.layers.filter(function (l) { return l.name.replace(/\./g, '_') === card[1]; })[0];
        if (layer) jobs.push(openCard(layer.name, +card[2]));
      }
      if (q.get('method') && S.a) jobs.push(runExplain());
      return Promise.all(jobs);
    }).catch(function (error) { status(error.message, true); });
  }

  // ------------------------------------------------------------------ start
  function setupControls() {
    var names = S.model.spec.class_names, select = $('pick-class');
    names.forEach(function (n, i) { var o = document.createElement('option'); o.value = String(i); o.textContent = n; select.appendChild(o); });
    $('method').innerHTML = S.model.methods.map(function (m) {
      return '<option value="' + esc(m) + '">' + esc(S.model.method_titles[m] || m) + '</option>';
    }).join('');
    $('method').value = S.method;
    var seed = Math.floor(Math.random() * 1e9);
    function choose(how, klass) {
      seed += 1;
      request('GET', '/api/pick?how=' + how + (klass !== undefined ? '&class=' + encodeURIComponent(klass) : '') + '&seed=' + seed)
        .then(function (p) { return setInput({kind: 'ref', ref: p.image}, p.image + ' · label ' + p.label_name + (p.predicted_name !== undefined ? ' · predicted ' + p.predicted_name : '')); })
        .catch(function (error) { status(error.message, true); });
    }
    $('random').addEventListener('click', function () { choose('random'); });
    $('misclassified').addEventListener('click', function () { choose('misclassified'); });
    select.addEventListener('change', function () { if (select.value !== '') choose('class', select.value); select.value = ''; });
    $('ref-form').addEventListener('submit', function (e) { e.preventDefault(); var v = $('ref').value.trim(); if (v) setInput({kind: 'ref', ref: v}, v); });
    function upload(file) { if (file) setInput({kind: 'file', blob: file}, file.name); }
    $('upload').addEventListener('change', function () { upload($('upload').files[0]); });
    var drop = $('drop');
    ['dragover', 'dragenter'].forEach(function (t) { document.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add('over'); }); });
    document.addEventListener('dragleave', function () { drop.classList.remove('over'); });
    document.addEventListener('drop', function (e) { e.preventDefault(); drop.classList.remove('over'); upload(e.dataTransfer.files[0]); });
    $('pin').addEventListener('click', pin); $('unpin').addEventListener('click', unpin);
    $('explain').addEventListener('click', runExplain);
    $('method').addEventListener('change', function () { S.method = $('method').value; updateUrl(); });
    $('target').addEventListener('change', function () { S.target = $('target').value; updateUrl(); });
    if (!S.model.dataset) Array.prototype.forEach.call(document.querySelectorAll('.needs-data'), function (el) { el.disabled = true; el.title = S.model.dataset_note || 'no dataset'; });
    window.addEventListener('resize', function () { if (S.a) layers(); });
  }

  request('GET', '/api/model').then(function (model) {
    S.model = model;
    $('model-name').textContent = model.label + ' · ' + model.spec.input_shape.join('×') + ' · ' + model.spec.class_names.length + ' classes' +
      (model.dataset ? ' · ' + model.dataset.name + ' ' + model.dataset.split : '') + (model.atlas && model.atlas.usable ? ' · atlas' : '');
    if (model.drawable) { $('pad').hidden = false; setupPad(); } else { $('drop').hidden = false; $('clear').hidden = true; }
    setupControls();
    render();
    return restore();
  }).then(function () {
    S.ready = true; updateUrl();
    if (!S.errors.length) status(S.a ? 'ready · prediction ' + S.a.predictedName : 'ready');
    window.explorer.loaded = true;
  }).catch(function (error) { status('cannot reach the explorer server: ' + error.message, true); window.explorer.loaded = true; });
})();
