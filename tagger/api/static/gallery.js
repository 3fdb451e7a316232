// The gallery's only script: reads the /v1 API and builds the pages with DOM calls (never
// innerHTML with data, so a tag or a ref cannot inject markup).
"use strict";
var tagger = (function () {
  var params = new URLSearchParams(location.search);

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "class") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function query(path, values) {
    var search = new URLSearchParams();
    Object.keys(values || {}).forEach(function (key) {
      var value = values[key];
      if (value === undefined || value === null || value === "") return;
      (Array.isArray(value) ? value : [value]).forEach(function (v) { search.append(key, v); });
    });
    var text = search.toString();
    return text ? path + "?" + text : path;
  }

  function api(path, values) {
    return fetch(query(path, values), { credentials: "same-origin" }).then(function (answer) {
      if (answer.status === 401) { location.href = "/signin"; throw new Error("sign in"); }
      return answer.json().then(function (body) {
        if (!answer.ok) throw new Error(body.message || answer.statusText);
        return body;
      });
    });
  }

  function showFlagged() { return localStorage.getItem("tagger.showFlagged") === "1"; }

  function flaggedToggle() {
    var box = document.getElementById("show-flagged");
    box.checked = showFlagged();
    box.addEventListener("change", function () {
      localStorage.setItem("tagger.showFlagged", box.checked ? "1" : "0");
      location.reload();
    });
  }

  function searchBox() {
    var input = document.getElementById("q");
    input.value = params.get("q") || "";
    document.getElementById("search").addEventListener("submit", function (event) {
      event.preventDefault();
      var q = input.value.trim();
      location.href = q ? query("/", { q: q }) : "/";
    });
  }

  function thumbnail(ref, cls) {
    var img = el("img", {
      src: query("/v1/photos/thumbnail", { ref: ref, show: showFlagged() ? "true" : "" }),
      alt: ref, loading: "lazy", class: cls || "thumb"
    });
    img.addEventListener("error", function () { img.replaceWith(el("div", { class: "thumb missing", text: "no thumbnail" })); });
    return img;
  }

  function tagChip(name) {
    return el("a", { class: "chip", href: query("/", { tag: name }), text: name });
  }

  // "colour" is the parent of every colour tag: true, and no help on a card.
  var QUIET = ["colour"];

  // The basic colour terms as a person pictures them (CSS's own "brown" is a dark red).
  var PALETTE = {
    black: "#111", white: "#fafafa", grey: "#8a8a8a", red: "#d32f2f", orange: "#f57c00",
    yellow: "#fbc02d", green: "#388e3c", blue: "#1e66d0", purple: "#7b1fa2", pink: "#f06292",
    brown: "#795548"
  };

  function card(item) {
    var link = el("a", { class: "card-link", href: query("/photo", { ref: item.ref }) }, [thumbnail(item.ref)]);
    var names = (item.tags || []).filter(function (n) { return QUIET.indexOf(n) < 0; });
    var chips = el("div", { class: "chips" }, names.slice(0, 6).map(tagChip));
    var node = el("article", { class: "card" }, [link, chips]);
    node.dataset.ref = item.ref;
    return node;
  }

  function facetGroup(title, counts, link) {
    if (!counts.length) return null;
    return el("section", { class: "facet" }, [
      el("h2", { text: title }),
      el("ul", {}, counts.map(function (c) {
        return el("li", {}, [el("a", { href: link(c.name) }, [
          el("span", { class: "facet-name", text: c.name }), el("span", { class: "count", text: String(c.count) })
        ])]);
      }))
    ]);
  }

  function peopleLink(name) {
    if (name === "3+") return query("/", { min_people: 3 });
    return query("/", { min_people: name, max_people: name });
  }

  function renderFacets(facets) {
    var aside = document.getElementById("facets");
    aside.replaceChildren(
      el("p", { class: "total", text: facets.total + " photos" }),
      facetGroup("Tags", facets.tags, function (n) { return query("/", { tag: n }); }),
      facetGroup("Colours", facets.colours, function (n) { return query("/", { colour: n }); }),
      facetGroup("People", facets.people, peopleLink),
      facetGroup("Safety", facets.safety, function (n) { return n === "flagged" ? "/?flagged=1" : n === "safe" ? "/?safe=1" : "/"; })
    );
  }

  function index() {
    searchBox();
    flaggedToggle();
    api("/v1/facets").then(renderFacets).catch(function () {});
    var grid = document.getElementById("grid");
    var more = document.getElementById("more");
    var status = document.getElementById("status");
    var q = params.get("q");
    var filters = {
      tag: params.getAll("tag"), colour: params.getAll("colour"),
      min_people: params.get("min_people"), max_people: params.get("max_people"),
      safe: params.get("safe") ? "true" : ""
    };
    var path, described;
    if (params.get("flagged")) { path = "/v1/flagged"; described = "flagged photos"; filters = {}; }
    else if (q || filters.tag.length || filters.colour.length) {
      path = "/v1/search"; filters.q = q;
      described = [q ? "“" + q + "”" : ""].concat(filters.tag, filters.colour).filter(Boolean).join(", ");
    }
    else { path = "/v1/photos/recent"; described = "recently tagged"; }
    var shown = 0;
    function load(cursor) {
      more.hidden = true;
      var values = Object.assign({}, filters, { cursor: cursor, limit: 48 });
      return api(path, values).then(function (page) {
        page.items.forEach(function (item) {
          grid.appendChild(card({ ref: item.ref, tags: item.tags.map(function (t) { return t.name || t; }) }));
        });
        shown += page.items.length;
        var note = shown + (shown === 1 ? " photo" : " photos") + " · " + described;
        if (page.unknown && page.unknown.length) note += " · no tag for: " + page.unknown.join(", ");
        status.textContent = note;
        more.hidden = !page.next;
        more.onclick = function () { load(page.next); };
      }).catch(function (error) { status.textContent = error.message; });
    }
    load(null);
  }

  function percent(value) { return (value * 100).toFixed(2) + "%"; }

  function photo() {
    searchBox();
    flaggedToggle();
    var ref = params.get("ref");
    var status = document.getElementById("status");
    if (!ref) { status.textContent = "no photo given"; return; }
    document.title = "tagger · " + ref;
    document.getElementById("ref").textContent = ref;
    api("/v1/photos", { ref: ref }).then(function (result) {
      var figure = document.getElementById("figure");
      var large = thumbnail(ref, "large");
      // Shown at up to 640 x 560 whatever the thumbnail's size; boxes are in % of the frame.
      large.addEventListener("load", function () {
        var scale = Math.min(640 / large.naturalWidth, 560 / large.naturalHeight);
        large.style.width = Math.round(large.naturalWidth * scale) + "px";
      });
      var frame = el("div", { class: "frame" }, [large]);
      (result.objects || []).forEach(function (obj) {
        var box = el("div", { class: "box", title: obj.label + " " + obj.score.toFixed(2) }, [
          el("span", { class: "box-label", text: obj.label + " " + Math.round(obj.score * 100) + "%" })
        ]);
        box.style.left = percent(obj.box[0]); box.style.top = percent(obj.box[1]);
        box.style.width = percent(obj.box[2] - obj.box[0]); box.style.height = percent(obj.box[3] - obj.box[1]);
        frame.appendChild(box);
      });
      figure.replaceChildren(frame);
      var meta = [result.status];
      if (result.width) meta.push(result.width + "×" + result.height);
      if (result.safety) meta.push("nsfw " + result.safety.nsfw.toFixed(2));
      if (result.reason) meta.push(result.reason);
      document.getElementById("meta").textContent = meta.join(" · ");
      var names = [];
      result.tags.forEach(function (t) { names.push(t.name); t.parents.forEach(function (p) { names.push(p); }); });
      names = names.filter(function (n, i) { return names.indexOf(n) === i; });
      document.getElementById("tags").replaceChildren.apply(document.getElementById("tags"), names.map(tagChip));
      var swatches = document.getElementById("colours");
      if (result.colours) {
        [["subject", result.colours.subject], ["photo", result.colours.photo]].forEach(function (pair) {
          swatches.appendChild(el("div", { class: "swatch-row" }, [el("span", { class: "swatch-title", text: pair[0] })].concat(
            pair[1].map(function (share) {
              var swatch = el("a", { class: "swatch", href: query("/", { colour: share.name }), title: share.name + " " + Math.round(share.fraction * 100) + "%" }, [
                el("span", { class: "swatch-colour" }), el("span", { class: "swatch-name", text: share.name + " " + Math.round(share.fraction * 100) + "%" })
              ]);
              swatch.firstChild.style.background = PALETTE[share.name] || share.name;
              return swatch;
            }))));
        });
      }
      var objects = document.getElementById("objects");
      (result.objects || []).forEach(function (obj) {
        objects.appendChild(el("li", { text: obj.label + " " + Math.round(obj.score * 100) + "%" }));
      });
      return api("/v1/similar", { ref: ref, limit: 12 });
    }).then(function (page) {
      var strip = document.getElementById("similar");
      page.items.forEach(function (hit) { strip.appendChild(card(hit)); });
      if (!page.items.length) strip.textContent = "no similar photos yet";
    }).catch(function (error) { status.textContent = error.message; });
  }

  return { index: index, photo: photo };
})();
