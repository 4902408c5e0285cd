/* convscope atlas: the draw pad. The model runs here, in forward.js; nothing is fetched. */
(function () {
  'use strict';
  var F = window.ConvscopeForward;
  var program = JSON.parse(document.getElementById('draw-program').textContent);
  var samples = JSON.parse(document.getElementById('draw-samples').textContent);
  var net = new F.Network(program), shape = program.input_shape, C = shape[0], H = shape[1], W = shape[2];
  var shown = program.layers.filter(function (l) { return l.kind === 'conv' || l.kind === 'pool' || l.kind === 'dense'; });
  var state = window.atlasDraw = {last: null, runs: 0};
  var holder = document.getElementById('draw-layers'), canvases = {};
  shown.forEach(function (l) {
    var fig = document.createElement('figure'), c = document.createElement('canvas'), cap = document.createElement('figcaption');
    c.dataset.layer = l.name; canvases[l.name] = {canvas: c, caption: cap};
    cap.textContent = l.name + ' ' + l.shape.join('×');
    fig.appendChild(c); fig.appendChild(cap); holder.appendChild(fig);
  });

  function bars(probs) {
    var order = Array.from(probs.keys());
    if (probs.length > 10) order = order.sort(function (a, b) { return probs[b] - probs[a]; }).slice(0, 10);
    var best = 0; for (var i = 1; i < probs.length; i++) if (probs[i] > probs[best]) best = i;
    var html = '';
    order.forEach(function (i) {
      var name = String(program.class_names[i]).replace(/[&<>"]/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; });
      html += '<span>' + (i === best ? '<b>' + name + '</b>' : name) + '</span><span><span class="b' + (i === best ? ' pred' : '') +
        '" style="display:block;width:' + Math.max(0.5, 100 * probs[i]).toFixed(1) + '%"></span></span><span class="num">' +
        (100 * probs[i]).toFixed(1) + '%</span>';
    });
    document.getElementById('draw-bars').innerHTML = html;
    return best;
  }

  function run(pixels, source) {
    var t0 = performance.now(), out = net.forward(pixels), ms = performance.now() - t0;
    F.drawPicture(document.getElementById('draw-seen'), pixels, shape);
    document.getElementById('draw-source').textContent = source ? '(' + source + ')' : '';
    var best = bars(out.probabilities);
    shown.forEach(function (l) {
      var t = out.layers[l.name], layout = F.drawGrid(canvases[l.name].canvas, t, {scale: t.shape.length === 1 ? 2 : 3, maxWidth: 640});
      canvases[l.name].caption.textContent = l.name + ' ' + l.shape.join('×') + ' · scale 0 … ' + layout.vmax.toPrecision(3);
    });
    document.getElementById('draw-status').textContent = 'predicted ' + program.class_names[best] + ' · forward pass ' + ms.toFixed(1) +
      ' ms in this page';
    state.last = {pixels: Array.from(pixels), probabilities: Array.from(out.probabilities), predicted: best, ms: ms, source: source};
    state.runs += 1;
  }

  samples.forEach(function (s, i) {
    var button = document.querySelector('.draw-sample[data-index="' + i + '"]');
    if (button) button.addEventListener('click', function () { run(F.decodeBase64(s.pixels), s.ref); });
  });

  var pad = document.getElementById('draw-canvas');
  if (pad) {
    var ctx = pad.getContext('2d'), drawing = false, last = null, pending = false;
    function clear() { ctx.fillStyle = '#000'; ctx.fillRect(0, 0, pad.width, pad.height); }
    clear();
    function convert() {
      pending = false;
      var gray = F.grayOf(ctx.getImageData(0, 0, pad.width, pad.height).data);
      var converted = F.mnistify(gray, pad.width, pad.height);
      if (!converted) return;
      var pixels = converted.image;
      if (H !== 28 || W !== 28) {  // a gray model of another size: the 28×28 digit resized by the browser
        var tmp = document.createElement('canvas'); tmp.width = 28; tmp.height = 28;
        F.drawPicture(tmp, pixels, [1, 28, 28], 1);
        var small = document.createElement('canvas'); small.width = W; small.height = H;
        small.getContext('2d').drawImage(tmp, 0, 0, W, H);
        pixels = F.grayOf(small.getContext('2d').getImageData(0, 0, W, H).data).map(Math.round);
        pixels = Uint8Array.from(pixels);
      }
      run(pixels, 'your drawing');
    }
    function schedule() { if (!pending) { pending = true; requestAnimationFrame(convert); } }
    function point(e) { var r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; }
    pad.addEventListener('pointerdown', function (e) { drawing = true; last = point(e); pad.setPointerCapture(e.pointerId); stroke(last); });
    pad.addEventListener('pointermove', function (e) { if (drawing) stroke(point(e)); });
    ['pointerup', 'pointercancel'].forEach(function (t) { pad.addEventListener(t, function () { drawing = false; last = null; schedule(); }); });
    function stroke(p) {
      ctx.strokeStyle = '#fff'; ctx.lineWidth = 20; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
      ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke(); last = p; schedule();
    }
    document.getElementById('draw-clear').addEventListener('click', function () { clear(); state.last = null; });
  }

  var file = document.getElementById('draw-file');
  if (file) file.addEventListener('change', function () {
    if (!file.files.length) return;
    createImageBitmap(file.files[0]).then(function (bitmap) {
      var c = document.createElement('canvas'); c.width = W; c.height = H;
      var g = c.getContext('2d'); g.fillStyle = '#fff'; g.fillRect(0, 0, W, H);
      g.imageSmoothingQuality = 'high'; g.drawImage(bitmap, 0, 0, W, H);
      var rgba = g.getImageData(0, 0, W, H).data, pixels = new Uint8Array(W * H * C);
      if (C === 1) pixels.set(F.grayOf(rgba));
      else for (var i = 0; i < W * H; i++) { pixels[3 * i] = rgba[4 * i]; pixels[3 * i + 1] = rgba[4 * i + 1]; pixels[3 * i + 2] = rgba[4 * i + 2]; }
      run(pixels, file.files[0].name);
    }, function () { document.getElementById('draw-status').textContent = 'cannot read that file as an image'; });
  });

  if (samples.length) run(F.decodeBase64(samples[0].pixels), samples[0].ref);
})();
