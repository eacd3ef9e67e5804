<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.16-Białowieża" styleCategories="AllStyleCategories" labelsEnabled="0" readOnly="0" hasScaleBasedVisibilityFlag="0" minScale="100000000" maxScale="0" simplifyDrawingHints="1" simplifyDrawingTol="1" simplifyLocal="1" simplifyAlgorithm="0" simplifyMaxScale="1">
 <renderer-v2 type="singleSymbol" symbollevels="0" forceraster="0" enableorderby="0">
  <symbols>
   <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="255,255,0,60"/>
      <Option name="outline_color" type="QString" value="230,0,180,255"/>
      <Option name="outline_style" type="QString" value="dot"/>
      <Option name="outline_width" type="QString" value="0.8"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="255,255,0,60"/>
     <prop k="outline_color" v="230,0,180,255"/>
     <prop k="outline_style" v="dot"/>
     <prop k="outline_width" v="0.8"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
  </symbols>
  <rotation/>
  <sizescale/>
 </renderer-v2>
 <fieldConfiguration/>
 <aliases>
  <alias field="candidate_id" name="候補ID"/>
  <alias field="area_m2" name="面積㎡"/>
  <alias field="score_max" name="確信度"/>
  <alias field="score_mean" name="平均確信度"/>
  <alias field="判定理由" name="判定理由"/>
 </aliases>
 <defaults/>
 <editable>
  <field name="candidate_id" editable="0"/>
  <field name="area_m2" editable="0"/>
  <field name="score_max" editable="0"/>
  <field name="score_mean" editable="0"/>
  <field name="判定理由" editable="0"/>
 </editable>
 <previewExpression/>
 <layerGeometryType>2</layerGeometryType>
</qgis>
