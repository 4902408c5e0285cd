/* convscope atlas: open a closed <details> when a link points inside it; the go-to-map box. No network. */
function openTarget(){var id=decodeURIComponent(location.hash.slice(1));if(!id)return;
var el=document.getElementById(id);if(!el)return;for(var p=el.parentElement;p;p=p.parentElement){if(p.tagName==='DETAILS')p.open=true;}
el.scrollIntoView();}
window.addEventListener('hashchange',openTarget);window.addEventListener('DOMContentLoaded',openTarget);
function gotoMap(form){var t=form.elements.address.value.trim().replace(':','-').replace(/\./g,'_');var el=document.getElementById(t);
form.elements.address.setCustomValidity(el?'':'no such map: try '+form.elements.address.placeholder.replace('go to map, e.g. ',''));form.reportValidity();
if(el)location.hash='#'+t;return false;}
